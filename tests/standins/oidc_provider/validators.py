"""The claims the stand-in provider vouches for: the person's name and email, and their
Django groups as the `groups` claim (with the `groups` scope, as Okta does)."""

from oauth2_provider.oauth2_validators import OAuth2Validator


class GroupsClaimValidator(OAuth2Validator):
    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "groups"}

    def get_additional_claims(self, request):
        user = request.user
        return {
            "email": user.email,
            "given_name": user.first_name,
            "family_name": user.last_name,
            "name": f"{user.first_name} {user.last_name}".strip(),
            "preferred_username": user.username,
            "groups": sorted(user.groups.values_list("name", flat=True)),
        }
