from django.urls import path

from miniapp import views
from miniapp.payments import views as payment_views
from miniapp.uploads import upload

app_name = "miniapp"

urlpatterns = [
    path("<str:token>/", views.case_home, name="home"),
    path("<str:token>/verify/", views.verify, name="verify"),
    path("<str:token>/options/", views.options, name="options"),
    path("<str:token>/review/", views.review, name="review"),
    path("<str:token>/done/", views.done, name="done"),
    path("<str:token>/feedback/", views.feedback, name="feedback"),
    path("<str:token>/help/", views.help_request, name="help"),
    path("<str:token>/renew/", views.renew, name="renew"),
    path("<str:token>/upload/", upload, name="upload"),
    path("<str:token>/pay/<str:action>/", payment_views.pay, name="pay"),
    path("<str:token>/pay/<str:action>/return/", payment_views.pay_return, name="pay-return"),
]
