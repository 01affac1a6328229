import pytest

pytestmark = pytest.mark.django_db


def test_trigger_creates_case(api, workflow, trigger_body):
    body = trigger_body()
    response = api.post("/api/v1/triggers/", body, format="json")
    assert response.status_code == 201, response.json()
    case_id = response.json()["id"]
    again = api.post("/api/v1/triggers/", body, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == case_id
    detail = api.get(f"/api/v1/cases/{case_id}/").json()
    assert [e["kind"] for e in detail["timeline"]] == ["triggered"]
