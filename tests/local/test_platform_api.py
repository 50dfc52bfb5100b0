"""The Skaha v1 API of the embedded platform, over plain HTTP (reference §1, §3, §4, §8, §12)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from canfar_local import LocalPlatform
from canfar_local.testing import skaha_client, wait_for

IMAGE = "images.canfar.net/skaha/base:latest"
ID_PATTERN = re.compile(r"^[a-z][a-z0-9]{7}$")


def create(client: httpx.Client, **params: Any) -> str:
    params.setdefault("image", IMAGE)
    params.setdefault("name", "job")
    response = client.post("/session", data=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/plain"
    assert response.text.endswith("\n")
    return response.text.strip()


def status_of(client: httpx.Client, session_id: str) -> str:
    return client.get(f"/session/{session_id}").json()["status"]


# -- discovery and static resources ------------------------------------------------------


def test_capabilities_advertise_platform_standards(platform: LocalPlatform) -> None:
    base = platform.url.removesuffix("/v1")
    response = httpx.get(base + "/capabilities")
    assert response.status_code == 200
    xml = response.text
    for kind in ("session", "context", "image", "repository"):
        assert f'standardID="http://www.opencadc.org/std/platform#{kind}-1"' in xml
        assert f'<accessURL use="base">{base}/v1/{kind}</accessURL>' in xml
    for method in ("cookie", "tls-with-certificate", "token"):
        assert f'standardID="ivo://ivoa.net/sso#{method}"' in xml


def test_availability_is_vosi_xml(platform: LocalPlatform) -> None:
    response = httpx.get(platform.url.removesuffix("/v1") + "/availability")
    assert response.status_code == 200
    assert "http://www.ivoa.net/xml/VOSIAvailability/v1.0" in response.text
    assert "<vosi:available>true</vosi:available>" in response.text
    assert "Skaha Service Available." in response.text


def test_context_is_compact_limitrange_json(client: httpx.Client) -> None:
    response = client.get("/context")
    assert response.headers["content-type"] == "application/json"
    assert " " not in response.text
    context = response.json()
    assert context["cores"] == {
        "default": 1,
        "defaultRequest": 1,
        "defaultLimit": 16,
        "options": list(range(1, 17)),
    }
    assert context["memoryGB"]["options"] == list(range(1, 193))
    assert context["memoryGB"]["defaultLimit"] == 32
    assert context["gpus"] == {"options": list(range(1, 8))}
    assert context["maxInteractiveSessions"] == 3


def test_repository_and_images(client: httpx.Client) -> None:
    assert client.get("/repository").text == '["images.canfar.net"]'
    images = client.get("/image").json()
    assert all(set(i) == {"id", "types", "digest"} for i in images)
    headless = client.get("/image", params={"type": "headless"}).json()
    assert headless and all("headless" in i["types"] for i in headless)
    bad = client.get("/image", params={"type": "bogus"})
    assert (bad.status_code, bad.text) == (400, "unknown type: bogus\n")


# -- authentication ----------------------------------------------------------------------


def test_missing_credentials_are_401_with_challenge(platform: LocalPlatform) -> None:
    response = httpx.get(platform.url + "/session")
    assert response.status_code == 401
    assert response.headers["content-type"] == "text/plain"
    assert response.text == "Unauthorized\n"
    assert "Bearer" in response.headers.get_list("www-authenticate")[0]


def test_unknown_token_is_401(platform: LocalPlatform) -> None:
    with skaha_client(platform, token="not-a-token") as c:
        response = c.get("/session")
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_success_carries_x_vo_authenticated(platform: LocalPlatform, client: httpx.Client) -> None:
    response = client.get("/session")
    assert response.headers["x-vo-authenticated"] == platform.user
    assert response.text == "[]"


def test_forbidden_users_get_403(platform_factory: Callable[..., LocalPlatform]) -> None:
    platform = platform_factory(forbidden_users=frozenset({"mallory"}))
    token = platform.add_user("mallory")
    with skaha_client(platform, token=token) as c:
        response = c.post("/session", data={"image": IMAGE, "name": "x"})
    assert response.status_code == 403
    assert response.text == "Not authorized to use the skaha system\n"


def test_users_are_isolated(platform: LocalPlatform, client: httpx.Client) -> None:
    session_id = create(client, cmd="sleep", args="30")
    alice = platform.add_user("alice")
    assert platform.add_user("alice") == alice
    with skaha_client(platform, token=alice) as other:
        assert other.get("/session").json() == []
        missing = other.get(f"/session/{session_id}")
        assert (missing.status_code, missing.text) == (404, f"session {session_id} not found\n")
        assert other.get(f"/session/{session_id}", params={"view": "logs"}).text == ""
        assert other.get(f"/session/{session_id}", params={"view": "events"}).status_code == 404
        assert other.delete(f"/session/{session_id}").status_code == 200
        assert other.post(f"/session/{session_id}", data={"action": "renew"}).status_code == 400
        everyone = other.get("/session", params={"view": "all"}).json()
        assert everyone == [
            {
                "userid": platform.user,
                "type": "headless",
                "status": everyone[0]["status"],
                "startTime": everyone[0]["startTime"],
            }
        ]
    assert status_of(client, session_id) in ("Pending", "Running")


# -- parameters ---------------------------------------------------------------------------


def test_post_parameters_need_form_content_type(platform: LocalPlatform) -> None:
    auth = {"Authorization": f"Bearer {platform.token}"}
    url = platform.url + "/session"
    query = {"image": IMAGE, "name": "x"}
    for headers in (auth, {**auth, "Content-Type": "application/json"}):
        response = httpx.post(url, params=query, headers=headers)
        assert (response.status_code, response.text) == (400, "Missing parameter 'image'\n")
    form = {**auth, "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8"}
    assert httpx.post(url, params=query, headers=form).status_code == 200
    multipart = httpx.post(url, files={"image": (None, IMAGE), "name": (None, "m")}, headers=auth)
    assert multipart.status_code == 200, multipart.text


def test_query_and_body_are_merged_and_names_case_insensitive(client: httpx.Client) -> None:
    response = client.post(
        "/session", params={"IMAGE": IMAGE}, data={"Name": "Mixed-Case", "CMD": "true"}
    )
    assert response.status_code == 200, response.text
    session = client.get(f"/session/{response.text.strip()}").json()
    assert session["name"] == "mixed-case"
    assert session["type"] == "headless"


@pytest.mark.parametrize(
    ("params", "body"),
    [
        ({}, "Missing parameter 'image'"),
        ({"image": " "}, "image is required"),
        (
            {"image": "docker.io/library/ubuntu", "type": "bogus", "cores": "0"},
            "session image 'docker.io/library/ubuntu' must come from one of [images.canfar.net]",
        ),
        ({"image": IMAGE, "type": "bogus", "cores": "0"}, "Invalid session type: bogus"),
        ({"image": IMAGE, "cores": "0.5", "ram": "0"}, "Invalid value for 'cores': 0.5"),
        ({"image": IMAGE, "cores": "17"}, "Invalid value for 'cores': 17"),
        ({"image": IMAGE, "cores": "two"}, "Invalid value for 'cores': two"),
        ({"image": IMAGE, "cores": "2", "ram": "0"}, "Invalid value for 'ram': 0"),
        ({"image": IMAGE, "ram": "193", "name": "bad_name"}, "Invalid value for 'ram': 193"),
        ({"image": IMAGE}, "Missing parameter 'name'"),
        ({"image": IMAGE, "name": "  "}, "Missing parameter 'name'"),
        (
            {"image": IMAGE, "name": "bad_name", "gpus": "0"},
            "name can only contain alpha-numeric chars and '-'",
        ),
        ({"image": IMAGE, "name": "ok", "gpus": "0"}, "Invalid value for 'gpus': 0"),
        ({"image": IMAGE, "name": "ok", "gpus": "8"}, "Invalid value for 'gpus': 8"),
        ({"image": IMAGE, "name": "ok", "gpus": "1.0"}, "Invalid value for 'gpus': 1.0"),
    ],
)
def test_create_validation_order_and_messages(
    client: httpx.Client, params: dict[str, str], body: str
) -> None:
    response = client.post("/session", data=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "text/plain"
    assert response.text == body + "\n"


def test_type_is_trimmed_case_insensitive_and_defaults_to_headless(client: httpx.Client) -> None:
    default = create(client, type="")
    assert client.get(f"/session/{default}").json()["type"] == "headless"
    notebook = create(client, type=" NoteBook ")
    assert client.get(f"/session/{notebook}").json()["type"] == "notebook"


def test_ids_and_names(client: httpx.Client) -> None:
    ids = [create(client, name="SameName", cmd="true") for _ in range(3)]
    assert len(set(ids)) == 3
    assert all(ID_PATTERN.match(i) for i in ids)
    names = {s["name"] for s in client.get("/session").json()}
    assert names == {"samename"}


# -- session JSON ------------------------------------------------------------------------


def test_flexible_session_json_exact_fields(platform: LocalPlatform, client: httpx.Client) -> None:
    session_id = create(client, name="Flex", cmd="sleep", args="30")
    response = client.get(f"/session/{session_id}")
    assert response.headers["content-type"] == "application/json"
    session = response.json()
    assert list(session) == [
        "id",
        "userid",
        "runAsUID",
        "runAsGID",
        "supplementalGroups",
        "image",
        "type",
        "status",
        "name",
        "startTime",
        "expiryTime",
        "connectURL",
        "requestedGPUCores",
        "isFixedResources",
    ] or list(session) == [
        "id",
        "userid",
        "runAsUID",
        "runAsGID",
        "supplementalGroups",
        "image",
        "type",
        "status",
        "name",
        "startTime",
        "expiryTime",
        "connectURL",
        "requestedGPUCores",
        "ramInUse",
        "cpuCoresInUse",
        "isFixedResources",
    ]
    assert session["id"] == session_id
    assert session["userid"] == platform.user
    assert session["runAsUID"] == session["runAsGID"]
    assert session["supplementalGroups"] == []
    assert session["connectURL"] == ""
    assert session["requestedGPUCores"] == "0"
    assert session["isFixedResources"] is False
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?Z", session["startTime"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", session["expiryTime"])
    # Gson pretty printing: two-space indent, "key": value.
    assert response.text == json.dumps(session, indent=2)


def test_fixed_session_json_and_usage_while_running(client: httpx.Client) -> None:
    session_id = create(client, cores="1.5", ram="1.5", gpus="2", cmd="sleep", args="30")
    session = client.get(f"/session/{session_id}").json()
    assert session["isFixedResources"] is True
    assert session["requestedRAM"] == "1.61"
    assert session["requestedCPUCores"] == "1.500"
    assert session["requestedGPUCores"] == "2"
    keys = list(session)
    assert keys.index("requestedRAM") == keys.index("connectURL") + 1
    running = wait_for(
        lambda: (s := client.get(f"/session/{session_id}").json()).get("ramInUse") and s,
        timeout=15,
        what="ramInUse to appear",
    )
    assert running["status"] == "Running"
    assert re.fullmatch(r"\d+\.\d\d", running["ramInUse"])
    assert re.fullmatch(r"\d+\.\d{3}", running["cpuCoresInUse"])
    keys = list(running)
    assert keys[-3:] == ["ramInUse", "cpuCoresInUse", "isFixedResources"]


def test_cores_only_is_still_flexible(client: httpx.Client) -> None:
    session = client.get(f"/session/{create(client, cores='2', cmd='true')}").json()
    assert session["isFixedResources"] is False
    assert "requestedCPUCores" not in session


def test_notebook_gets_connect_url(platform: LocalPlatform, client: httpx.Client) -> None:
    session_id = create(client, type="notebook", name="nb")
    session = client.get(f"/session/{session_id}").json()
    assert session["connectURL"].startswith("https://")
    assert session["connectURL"].endswith(
        f"/session/notebook/{session_id}/lab/tree/arc/home/{platform.user}?token={session_id}"
    )
    wait_for(lambda: status_of(client, session_id) == "Running", what="notebook running")


# -- listing -----------------------------------------------------------------------------


def test_listing_filters_and_views(client: httpx.Client) -> None:
    done = create(client, name="done", cmd="true")
    running = create(client, name="running", cmd="sleep", args="30")
    notebook = create(client, name="nb", type="notebook")
    wait_for(lambda: status_of(client, done) == "Completed", what="completion")
    wait_for(lambda: status_of(client, running) == "Running", what="running")

    def ids(**params: str) -> set[str]:
        return {s["id"] for s in client.get("/session", params=params).json()}

    assert ids() == {done, running, notebook}
    listing = client.get("/session")
    assert listing.text == json.dumps(listing.json(), indent=2)  # Gson pretty printing
    assert ids(type="HEADLESS") == {done, running}
    assert ids(status="completed") == {done}
    assert ids(type="nonsense") == set()
    assert ids(view="interactive") == {notebook}
    assert ids(view="interactive", status="running") <= {notebook}
    assert ids(view="whatever") == {done, running, notebook}
    public = client.get("/session", params={"view": "all"}).json()
    assert all(set(p) <= {"userid", "type", "status", "startTime"} for p in public)
    assert len(public) == 3


def test_stats_view(platform: LocalPlatform, client: httpx.Client) -> None:
    create(client, cores="2", ram="3", cmd="sleep", args="30")
    stats = client.get("/session", params={"view": "stats"}).json()
    assert list(stats) == ["cores", "ram"]
    assert stats["cores"]["requestedCPUCores"] == 2.0
    assert stats["cores"]["cpuCoresAvailable"] == 64.0
    assert stats["cores"]["maxCPUCores"] == {"cpuCores": 16.0, "withRam": "192G"}
    assert stats["ram"]["requestedRAM"] == "3.221G"
    assert stats["ram"]["maxRAM"] == {"ram": "192G", "withCPUCores": 16.0}


def test_stats_unavailable_is_503(platform_factory: Callable[..., LocalPlatform]) -> None:
    platform = platform_factory(stats_available=False)
    with skaha_client(platform) as c:
        response = c.get("/session", params={"view": "stats"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "30"
    assert response.text == "temporarily unavailable: null\n"


# -- single session, logs, events, delete, renew --------------------------------------------


def test_unknown_session_views(client: httpx.Client) -> None:
    response = client.get("/session/abcdefgh")
    assert (response.status_code, response.text) == (404, "session abcdefgh not found\n")
    logs = client.get("/session/abcdefgh", params={"view": "logs"})
    assert (logs.status_code, logs.text, logs.headers["content-type"]) == (200, "", "text/plain")
    assert logs.headers["x-vo-authenticated"]
    events = client.get("/session/abcdefgh", params={"view": "events"})
    assert (events.status_code, events.text) == (404, "session abcdefgh not found.\n")


def test_events_table_for_a_started_session(client: httpx.Client) -> None:
    session_id = create(client, cmd="sleep", args="30")
    wait_for(lambda: status_of(client, session_id) == "Running", what="running")
    response = client.get(f"/session/{session_id}", params={"view": "events"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain"
    lines = response.text.rstrip("\n").splitlines()
    assert re.split(r"\s{2,}", lines[0]) == ["TYPE", "REASON", "MESSAGE", "FIRST-TIME", "LAST-TIME"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert all(len(row) == 5 for row in rows)
    assert [row[1] for row in rows] == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]


def test_delete_semantics(client: httpx.Client) -> None:
    session_id = create(client, cmd="sleep", args="30")
    for target in (session_id, session_id, "zzzzzzzz"):
        response = client.delete(f"/session/{target}")
        assert (response.status_code, response.text) == (200, "")
    assert client.get(f"/session/{session_id}").status_code == 404
    assert client.get("/session").json() == []
    everything = client.delete("/session")
    assert (everything.status_code, everything.text) == (400, "Cannot kill all sessions.\n")


def test_post_to_existing_session(platform: LocalPlatform, client: httpx.Client) -> None:
    session_id = create(client, cmd="sleep", args="30")
    plain = client.post(f"/session/{session_id}")
    assert (plain.status_code, plain.text) == (400, "Cannot modify an existing session\n")
    odd = client.post(f"/session/{session_id}", data={"action": "explode"})
    assert (odd.status_code, odd.text) == (400, "unrecognized action\n")
    renew = client.post(f"/session/{session_id}", data={"action": "RENEW"})
    assert (renew.status_code, renew.text) == (200, "")
    unknown = client.post("/session/abcdefgh", data={"action": "renew"})
    uid = platform.config.uid
    assert unknown.status_code == 400
    assert unknown.text == (
        f"No active job for user PosixPrincipal [uidNumber={uid},{uid},{platform.user}] "
        "with session abcdefgh\n"
    )


def test_renew_extends_a_short_deadline(platform_factory: Callable[..., LocalPlatform]) -> None:
    platform = platform_factory(deadline_seconds=100, session_expiry_seconds=1000)
    with skaha_client(platform) as c:
        session_id = create(c, cmd="sleep", args="30")
        before = c.get(f"/session/{session_id}").json()
        assert c.post(f"/session/{session_id}", data={"action": "renew"}).status_code == 200
        after = c.get(f"/session/{session_id}").json()
    start = time.mktime(time.strptime(before["expiryTime"], "%Y-%m-%dT%H:%M:%SZ"))
    end = time.mktime(time.strptime(after["expiryTime"], "%Y-%m-%dT%H:%M:%SZ"))
    assert 1000 <= end - start + 100 <= 1003


def test_invalid_request_path(client: httpx.Client) -> None:
    response = client.get("/session/a/app/b/c")
    assert (response.status_code, response.text) == (400, "Invalid request: a/app/b/c\n")


def test_interactive_cap(platform_factory: Callable[..., LocalPlatform]) -> None:
    platform = platform_factory(max_interactive_sessions=2)
    with skaha_client(platform) as c:
        first = create(c, type="notebook", name="a")
        create(c, type="desktop", name="b")
        refused = c.post("/session", data={"image": IMAGE, "name": "c", "type": "carta"})
        assert refused.status_code == 400
        assert (
            refused.text == f"User {platform.user} has reached the maximum of 2 active sessions.\n"
        )
        create(c, name="headless-is-never-capped", cmd="true")
        c.delete(f"/session/{first}")
        create(c, type="carta", name="c")


# -- the real server's YAML and regex pitfalls ---------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"args": 'say "hi"'},
        {"cmd": 'a"b'},
        {"env": 'K=v"x'},
        {"args": "\\\\q"},
    ],
)
def test_quotes_and_bad_escapes_are_500(client: httpx.Client, params: dict[str, str]) -> None:
    response = client.post("/session", data={"image": IMAGE, "name": "x", **params})
    assert response.status_code == 500
    assert response.headers["content-type"] == "text/plain"
    assert response.text.startswith("unexpected exception: ")
    assert not response.text.endswith("\n")
    assert client.get("/session").json() == []


def test_dollar_in_args_hits_java_replacement(client: httpx.Client) -> None:
    response = client.post("/session", data={"image": IMAGE, "name": "x", "args": "$(HOME)"})
    assert (response.status_code, response.text) == (400, "Illegal group reference\n")


def test_long_or_dashed_names_fail_like_kubectl(client: httpx.Client) -> None:
    for name in ("-dash", "a" * 64):
        response = client.post("/session", data={"image": IMAGE, "name": name})
        assert response.status_code == 500
        assert response.text.startswith("unexpected exception: java.io.IOException")


def test_private_image_rule(platform_factory: Callable[..., LocalPlatform]) -> None:
    platform = platform_factory(public_images=(IMAGE,))
    private = "images.canfar.net/me/private:1"
    with skaha_client(platform) as c:
        assert c.post("/session", data={"image": IMAGE, "name": "x", "cmd": "true"}).is_success
        missing = c.post("/session", data={"image": private, "name": "x"})
        assert missing.status_code == 400
        assert missing.text == (
            "No authentication provided for unknown or private image.  Use "
            "x-skaha-registry-auth request header with base64Encode(username:secret).\n"
        )
        bad = c.post(
            "/session",
            data={"image": private, "name": "x"},
            headers={"X-Skaha-Registry-Auth": "bm9jb2xvbg=="},
        )
        assert (bad.status_code, bad.text) == (
            400,
            "Invalid input.  Must be in form of username:secret\n",
        )
        good = c.post(
            "/session",
            data={"image": private, "name": "x", "cmd": "true"},
            headers={"x-skaha-registry-auth": "dXNlcjpzZWNyZXQ="},
        )
        assert good.status_code == 200


def test_double_slash_is_tolerated(platform: LocalPlatform) -> None:
    base = platform.url.removesuffix("/v1")
    response = httpx.get(
        base + "//v1/session", headers={"Authorization": f"Bearer {platform.token}"}
    )
    assert (response.status_code, response.text) == (200, "[]")


# -- counters and faults -------------------------------------------------------------------


def test_counters_per_route(platform: LocalPlatform, client: httpx.Client) -> None:
    platform.reset_counters()
    session_id = create(client, cmd="true")
    client.get("/session")
    client.get(f"/session/{session_id}")
    client.get(f"/session/{session_id}", params={"view": "logs"})
    client.delete(f"/session/{session_id}")
    counters = platform.counters()
    assert counters["POST /v1/session"] == 1
    assert counters["GET /v1/session"] == 1
    assert counters["GET /v1/session/{id}"] == 2
    assert counters["DELETE /v1/session/{id}"] == 1
    assert counters["total"] == 5
    admin = httpx.get(
        platform.base_url + "/_platform/counters",
        headers={"Authorization": f"Bearer {platform.token}"},
    )
    assert admin.json() == counters
    assert httpx.get(platform.base_url + "/_platform/counters").status_code == 401
    other = platform.add_user("bob")
    assert (
        httpx.get(
            platform.base_url + "/_platform/counters",
            headers={"Authorization": f"Bearer {other}"},
        ).status_code
        == 401
    )
    platform.reset_counters()
    assert platform.counters() == {"total": 0}


def test_injected_503_then_success(platform: LocalPlatform, client: httpx.Client) -> None:
    platform.inject_fault(method="POST", route="/v1/session", status=503, count=2)
    for _ in range(2):
        response = client.post("/session", data={"image": IMAGE, "name": "x"})
        assert response.status_code == 503
        assert response.headers["retry-after"] == "30"
        assert response.text == "temporarily unavailable: null\n"
    assert client.get("/session").json() == []
    create(client, cmd="true")
    assert platform.counters()["POST /v1/session"] == 3


def test_injected_gateway_errors_and_retry_after(
    platform: LocalPlatform, client: httpx.Client
) -> None:
    platform.inject_fault(method="GET", route="/v1/session/{id}", status=502, retry_after=5)
    platform.inject_fault(method="GET", route="/skaha/v1/session/abcdefgh", status=504)
    first = client.get("/session/abcdefgh")
    assert (first.status_code, first.headers["retry-after"]) == (502, "5")
    second = client.get("/session/abcdefgh")
    assert second.status_code == 504
    assert "retry-after" not in second.headers
    assert client.get("/session/abcdefgh").status_code == 404


def test_injected_delay(platform: LocalPlatform, client: httpx.Client) -> None:
    platform.inject_fault(method="GET", route="/v1/session", delay=0.5)
    started = time.monotonic()
    assert client.get("/session").status_code == 200
    assert time.monotonic() - started >= 0.5


def test_ambiguous_create_drops_the_connection(
    platform: LocalPlatform, client: httpx.Client
) -> None:
    platform.inject_fault(method="POST", route="/v1/session", drop_after_handling=True)
    with pytest.raises(httpx.TransportError):
        client.post("/session", data={"image": IMAGE, "name": "ambiguous", "cmd": "true"})
    sessions = client.get("/session").json()
    assert [s["name"] for s in sessions] == ["ambiguous"]


def test_faults_over_the_admin_route(platform: LocalPlatform, client: httpx.Client) -> None:
    admin = httpx.Client(
        base_url=platform.base_url, headers={"Authorization": f"Bearer {platform.token}"}
    )
    with admin:
        armed = admin.post(
            "/_platform/faults",
            json={"method": "GET", "route": "/v1/session", "status": 503, "count": 1},
        )
        assert armed.status_code == 200
        assert len(admin.get("/_platform/faults").json()) == 1
        assert client.get("/session").status_code == 503
        assert admin.get("/_platform/faults").json() == []
        admin.post("/_platform/faults", json={"route": "/v1/session", "status": 502})
        assert admin.delete("/_platform/faults").status_code == 200
        assert client.get("/session").status_code == 200
        user = admin.post("/_platform/users", json={"name": "carol"}).json()
        assert user["token"] == platform.add_user("carol")
