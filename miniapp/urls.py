from django.urls import path

from miniapp import views

app_name = "miniapp"

urlpatterns = [
    path("<str:token>/", views.case_home, name="home"),
]
