"""A real OpenID Connect provider for the single sign-on tests: django-oauth-toolkit with
OIDC on, in its own process, with its own settings and SQLite database. Start it with
`launcher.OidcProvider.start(...)`; it never imports Closeloop's code."""
