"""The test's handle on the stand-in provider: create or change a person and their groups
(as an identity team would at a real provider). Needs the launcher's control token."""

import json

from django.conf import settings
from django.contrib.auth.models import Group, User
from django.http import HttpResponseForbidden, JsonResponse
from django.utils.crypto import constant_time_compare
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST


@csrf_exempt
@require_POST
def person_put(request):
    token = request.headers.get("X-Control-Token", "")
    if not constant_time_compare(token, settings.CONTROL_TOKEN):
        return HttpResponseForbidden("control token required")
    body = json.loads(request.body)
    person, _ = User.objects.get_or_create(username=body["username"])
    person.set_password(body["password"])
    person.email = body.get("email", "")
    person.first_name = body.get("given_name", "")
    person.last_name = body.get("family_name", "")
    person.save()
    person.groups.set([Group.objects.get_or_create(name=name)[0] for name in body["groups"]])
    return JsonResponse({"sub": str(person.pk)})
