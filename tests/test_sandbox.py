"""The sandbox Stock2Shop API, driven over real HTTP on 127.0.0.1 (issue 2)."""

from __future__ import annotations

import base64
import copy
import io
import socket
import time
from email.utils import parsedate_to_datetime
from typing import Any

import pytest
import requests
from PIL import Image

from connector.sandbox import Faults, Sandbox, SandboxConfig
from connector.sandbox.rules import MAX_IMAGE_BYTES
from tests.support import FakeTime

FAST = {"rate": 1000.0, "unauth_rate": 1000.0}  # for tests that are not about rate limits
DROP = object()  # marks a key to delete in `product_item(...)`


def login(sb: Sandbox, username: str = "demo", password: str = "demo") -> requests.Response:
    return requests.post(f"{sb.url}/v1/users/authenticate", timeout=5,
                         json={"system_user_auth": {"username": username, "password": password}})


def post(sb: Sandbox, path: str, token: str, body: Any, **params: Any) -> requests.Response:
    return requests.post(f"{sb.url}{path}", params={"token": token, **params}, json=body, timeout=5)


def product_item(code: str = "P1", variant: str = "P1-S", option1: Any = "S", **changes: Any) -> dict:
    """A valid one-variant product item; `changes` maps dotted paths (with __ for .) to values."""
    item = {"source": {"source_id": 1, "product_active": "true", "source_product_code": code,
                       "sync_token": "0", "fetch_token": "0"},
            "product": {"title": "Shirt", "options": [{"name": "Size", "position": "1"}],
                        "variants": {"source_variant_code": variant, "sku": variant, "price": "100.00",
                                     "qty": 9, "grams": "250", "option1": option1,
                                     "inventory_management": "true"}}}
    if option1 is None:
        item["product"]["options"] = []
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = item
        for key in parents:
            node = node[key]
        if value is DROP:
            node.pop(last, None)
        else:
            node[last] = value
    return item


def picture(fmt: str = "PNG", size: tuple[int, int] = (4, 4)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, fmt)
    return buffer.getvalue()


def image_item(code: str = "P1", image_id: str = "img-1", data: bytes | None = None, **image: Any) -> dict:
    encoded = base64.b64encode(picture() if data is None else data).decode()
    return {"source": {"source_id": 1, "source_product_code": code},
            "image": {"image_id": image_id, "action": "I", "image": encoded, **image}}


@pytest.fixture
def fast(make_sandbox) -> Sandbox:
    return make_sandbox(**FAST)


@pytest.fixture
def token(fast: Sandbox) -> str:
    return fast.issue_token()


# ---- users and tokens -----------------------------------------------------------------


def test_authenticate_gives_a_token_that_valid_token_accepts(fast):
    response = login(fast)
    assert response.status_code == 200
    user = response.json()["system_user"]
    assert user["username"] == "demo" and user["token"]
    check = requests.get(f"{fast.url}/v1/users/valid_token/{user['token']}", timeout=5)
    assert check.status_code == 200 and check.json()["system_user"]["username"] == "demo"


@pytest.mark.parametrize("password", ["wrong", ""])
def test_wrong_password_is_refused_with_401(fast, password):
    response = login(fast, password=password)
    assert response.status_code == 401 and "error" in response.json()


def test_authenticate_with_a_malformed_body_is_400(fast):
    response = requests.post(f"{fast.url}/v1/users/authenticate", data=b"{nope", timeout=5)
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "system_user_auth"


def test_a_new_authenticate_invalidates_the_earlier_token(fast):
    first = login(fast).json()["system_user"]["token"]
    second = login(fast).json()["system_user"]["token"]
    assert first != second
    assert requests.get(f"{fast.url}/v1/sources", params={"token": first}, timeout=5).status_code == 401
    assert requests.get(f"{fast.url}/v1/sources", params={"token": second}, timeout=5).status_code == 200
    assert requests.get(f"{fast.url}/v1/users/valid_token/{first}", timeout=5).status_code == 401


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/sources"), ("GET", "/v1/channels"), ("POST", "/v1/products/queue"),
    ("POST", "/v1/images/queue"), ("POST", "/v1/products/elastic_search"),
    ("POST", "/v1/orders/elastic_search"), ("POST", "/v2-queue/order")])
@pytest.mark.parametrize("token_param", [None, "not-a-token"])
def test_every_endpoint_needs_a_valid_token(fast, method, path, token_param):
    params = {"token": token_param} if token_param else {}
    response = requests.request(method, f"{fast.url}{path}", params=params, json={}, timeout=5)
    assert response.status_code == 401
    assert response.json() == {"error": "invalid or expired token"}


def test_a_token_dies_after_its_lifetime(make_sandbox):
    clock = FakeTime()
    sb = make_sandbox(token_lifetime=60, clock=clock, **FAST)
    token = sb.issue_token()
    clock.now += 59
    assert requests.get(f"{sb.url}/v1/sources", params={"token": token}, timeout=5).status_code == 200
    clock.now += 1
    assert requests.get(f"{sb.url}/v1/sources", params={"token": token}, timeout=5).status_code == 401


def test_sources_and_channels_list_the_configured_ones(make_sandbox):
    sb = make_sandbox(source_id=318, channel_id=7, **FAST)
    token = sb.issue_token()
    sources = requests.get(f"{sb.url}/v1/sources", params={"token": token}, timeout=5).json()
    channels = requests.get(f"{sb.url}/v1/channels", params={"token": token}, timeout=5).json()
    assert [s["id"] for s in sources["system_sources"]] == [318]
    assert [c["id"] for c in channels["system_channels"]] == [7]


# ---- product validation ---------------------------------------------------------------

REFUSED = [
    ("variants as a list", {"product__variants": [{"source_variant_code": "X", "sku": "X"}]},
     "product.variants", "one object"),
    ("no source_id", {"source__source_id": DROP}, "source.source_id", "required"),
    ("another source", {"source__source_id": 2}, "source.source_id", "not this user's source"),
    ("no product_active", {"source__product_active": DROP}, "source.product_active", "required"),
    ("product_active an object", {"source__product_active": {"a": 1}}, "source.product_active", "not a boolean"),
    ("no source_product_code", {"source__source_product_code": DROP}, "source.source_product_code", "required"),
    ("empty source_product_code", {"source__source_product_code": ""}, "source.source_product_code", "empty"),
    ("no sync_token", {"source__sync_token": DROP}, "source.sync_token", "required"),
    ("no fetch_token", {"source__fetch_token": DROP}, "source.fetch_token", "required"),
    ("no title", {"product__title": DROP}, "product.title", "required"),
    ("no source_variant_code", {"product__variants__source_variant_code": DROP},
     "product.variants.source_variant_code", "required"),
    ("no sku", {"product__variants__sku": DROP}, "product.variants.sku", "required"),
    ("price not numeric", {"product__variants__price": "abc"}, "product.variants.price",
     "price is not numeric: 'abc'"),
    ("price hexadecimal", {"product__variants__price": "0x539"}, "product.variants.price", "not numeric"),
    ("price a boolean", {"product__variants__price": True}, "product.variants.price", "not numeric"),
    ("qty not numeric", {"product__variants__qty": "nine"}, "product.variants.qty", "not numeric"),
    ("grams not numeric", {"product__variants__grams": "1kg"}, "product.variants.grams", "not numeric"),
    ("tier price not numeric", {"product__variants__price_tiers": [{"tier": "Trade", "price": "n/a"}]},
     "product.variants.price_tiers[0].price", "not numeric"),
    ("warehouse qty not numeric",
     {"product__variants__qty_availability": [{"description": "JHB", "qty": "lots"}]},
     "product.variants.qty_availability[0].qty", "not numeric"),
    ("inventory_management a list", {"product__variants__inventory_management": [1]},
     "product.variants.inventory_management", "not a boolean"),
    ("title an object", {"product__title": {"en": "x"}}, "product.title", "not text"),
    ("four options", {"product__options": [{"name": f"O{n}", "position": n} for n in range(1, 5)]},
     "product.options", "at most 3"),
    ("option without its value", {"product__variants__option1": None}, "product.variants.option1",
     "has position 1"),
    ("value without its option", {"product__variants__option2": "Red"}, "product.variants.option2",
     "no option has position 2"),
    ("option position 4", {"product__options": [{"name": "Size", "position": 4}]},
     "product.options[0].position", "1, 2 or 3"),
]


@pytest.mark.parametrize("name,changes,field,message", REFUSED, ids=[r[0] for r in REFUSED])
def test_a_bad_product_item_is_refused_naming_its_field(fast, token, name, changes, field, message):
    good = product_item("GOOD", "GOOD-1")
    response = post(fast, "/v1/products/queue", token, {"system_products": [good, product_item(**changes)]})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "validation failed"
    assert any(e["index"] == 1 and e["field"] == field and message in e["message"] for e in body["errors"]), body
    assert fast.state()["queue"] == []  # nothing from a refused request is queued


ACCEPTED = [
    ("documented example", {}),
    ("numbers as JSON numbers", {"product__variants__price": 100.5, "product__variants__qty": 9}),
    ("numeric strings", {"product__variants__price": " 99.95 ", "product__variants__qty": "9.0"}),
    ("blank numbers", {"product__variants__price": "", "product__variants__grams": "  "}),
    ("any string is a boolean", {"product__variants__inventory_management": "asdf"}),
    ("boolean as number", {"source__product_active": 1}),
    ("source_id as string", {"source__source_id": "1"}),
    ("tiers and warehouses", {"product__variants__price_tiers": [{"tier": "Trade", "price": "80"}],
                              "product__variants__qty_availability": [{"description": "JHB", "qty": "4"}]}),
]


@pytest.mark.parametrize("name,changes", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_a_good_product_item_is_accepted(fast, token, name, changes):
    response = post(fast, "/v1/products/queue", token, {"system_products": [product_item(**changes)]})
    assert response.status_code == 200, response.text
    assert response.json() == {"system_products": {"sync_product": 1}}
    assert [p["source_product_code"] for p in fast.state()["products"]] == ["P1"]


def test_a_simple_product_without_options_is_accepted(fast, token):
    response = post(fast, "/v1/products/queue", token, {"system_products": [product_item(option1=None)]})
    assert response.status_code == 200, response.text


def test_stored_values_are_coerced_like_the_api(fast, token):
    item = product_item(product__variants__qty="-3", product__variants__price="12.50")
    post(fast, "/v1/products/queue", token, {"system_products": [item]})
    variant = fast.state()["products"][0]["variants"][0]
    assert (variant["qty"], variant["price"], variant["grams"], variant["inventory_management"]) == (0, 12.5, 250, True)


def test_every_bad_item_is_listed(fast, token):
    items = [product_item(product__variants__price="abc"), product_item("P2", "P2-S"),
             product_item("P3", "P3-S", product__title=DROP)]
    errors = post(fast, "/v1/products/queue", token, {"system_products": items}).json()["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [(0, "product.variants.price"), (2, "product.title")]


@pytest.mark.parametrize("raw,fragment", [
    (b"{not json", "malformed JSON"),
    (b"[]", "JSON object"),
    (b'{"products": []}', "missing"),
    (b'{"system_products": {}}', "not a list"),
])
def test_malformed_or_misshapen_bodies_are_400_without_an_index(fast, token, raw, fragment):
    response = requests.post(f"{fast.url}/v1/products/queue", params={"token": token}, data=raw,
                             headers={"Content-Type": "application/json"}, timeout=5)
    assert response.status_code == 400
    error = response.json()["errors"][0]
    assert error["index"] is None and error["field"] == "system_products" and fragment in error["message"]


def test_a_delete_needs_only_the_keys(fast, token):
    post(fast, "/v1/products/queue", token, {"system_products": [product_item()]})
    delete = {"source": {"source_id": 1, "product_active": "false", "source_product_code": "P1",
                         "sync_token": "0", "fetch_token": "0"},
              "product": {"variants": {"source_variant_code": "P1-S"}}}
    assert post(fast, "/v1/products/queue", token, {"system_products": [delete]}).status_code == 200
    assert fast.state()["products"] == []


# ---- relationship rules across one product ---------------------------------------------


def two_options(variant: str, size: Any, colour: Any) -> dict:
    return product_item("P1", variant, size, product__options=[{"name": "Size", "position": 1},
                                                               {"name": "Colour", "position": 2}],
                        product__variants__option2=colour)


@pytest.mark.parametrize("first,second,ok", [
    (product_item("P1", "A", "S"), product_item("P1", "B", "M"), True),
    (product_item("P1", "A", "S"), product_item("P1", "B", "S"), False),         # same combination
    (two_options("A", "S", "Red"), two_options("B", "S", "Blue"), True),
    (two_options("A", "S", "Red"), two_options("B", "S", "Red"), False),
    (product_item("P1", "A", None), product_item("P1", "B", None), False),       # two simple variants
    (product_item("P1", "A", "S"), product_item("P1", "A", "S"), True),          # same variant again
    (two_options("A", "S", "Red"), product_item("P1", "B", "M"), False),         # different options filled
])
def test_variants_of_one_product_need_unique_combinations_and_the_same_options(fast, token, first, second, ok):
    in_one = post(fast, "/v1/products/queue", token, {"system_products": [first, second]})
    assert (in_one.status_code == 200) is ok, in_one.text
    if not ok:
        assert in_one.json()["errors"][0]["index"] == 1
        assert in_one.json()["errors"][0]["field"] == "product.variants.options"
    fast.reset()
    assert post(fast, "/v1/products/queue", token, {"system_products": [first]}).status_code == 200
    across = post(fast, "/v1/products/queue", token, {"system_products": [second]})
    assert (across.status_code == 200) is ok, "the rule also holds against what is stored"


def test_a_deleted_variant_frees_its_combination(fast, token):
    post(fast, "/v1/products/queue", token, {"system_products": [product_item("P1", "A", "S")]})
    gone = product_item("P1", "A", "S", source__product_active="false")
    again = post(fast, "/v1/products/queue", token, {"system_products": [gone, product_item("P1", "B", "S")]})
    assert again.status_code == 200, again.text


# ---- storing ----------------------------------------------------------------------------


def test_upsert_unchanged_resend_and_delete_are_logged(fast, token):
    send = lambda *items: post(fast, "/v1/products/queue", token, {"system_products": list(items)})
    send(product_item("P1", "A", "S"), product_item("P1", "B", "M"))
    send(product_item("P1", "A", "S"))
    send(product_item("P1", "A", "S", product__variants__price="120"))
    send(product_item("P1", "A", "S", source__product_active="false"))
    assert [p["variants"][0]["source_variant_code"] for p in fast.state()["products"]] == ["B"]
    send(product_item("P1", "B", "M", source__product_active="false"))
    state = fast.state()
    assert state["products"] == []
    assert [(q["source_variant_code"], q["action"]) for q in state["queue"]] == [
        ("A", "created"), ("B", "created"), ("A", "unchanged"), ("A", "updated"), ("A", "deleted"),
        ("B", "deleted")]
    assert all(q["status"] == "accepted" for q in state["queue"])


# ---- images -----------------------------------------------------------------------------


def test_an_image_after_its_product_is_accepted_and_before_it_fails(fast, token):
    early = post(fast, "/v1/images/queue", token, {"system_images": [image_item("P1", "early")]})
    assert early.status_code == 200 and early.json() == {"system_images": {"sync_image": 1}}
    post(fast, "/v1/products/queue", token, {"system_products": [product_item()]})
    post(fast, "/v1/images/queue", token, {"system_images": [image_item("P1", "late", meta={"main_image": "true"})]})
    state = fast.state()
    assert [(q["seq"], q["kind"], q["image_id"], q["status"]) for q in state["queue"]] == [
        (1, "image", "early", "failed"), (2, "product", None, "accepted"), (3, "image", "late", "accepted")]
    assert "does not exist" in state["queue"][0]["reason"]
    [stored] = state["images"]
    assert (stored["image_id"], stored["format"], stored["main"], stored["size"]) == ("late", "png", True, len(picture()))
    assert state["products"][0]["images"][0]["source_image_code"] == "late"


def test_an_image_naming_an_unknown_variant_fails_in_the_log(fast, token):
    post(fast, "/v1/products/queue", token, {"system_products": [product_item()]})
    item = image_item()
    item["source"]["source_variant_code"] = "NOPE"
    post(fast, "/v1/images/queue", token, {"system_images": [item]})
    assert fast.state()["queue"][-1]["status"] == "failed"


IMAGE_REFUSED = [
    ("not base64", {"image": "%%%"}, "image.image", "base64"),
    ("a gif", {"image": base64.b64encode(b"GIF89a" + b"\0" * 20).decode()}, "image.image", "neither a JPEG nor a PNG"),
    ("over 2 MB", {"image": base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * MAX_IMAGE_BYTES).decode()},
     "image.image", "2 MB"),
    ("action D", {"action": "D"}, "image.action", "must be \"I\""),
    ("no image_id", {"image_id": None}, "image.image_id", "required"),
    ("no image", {"image": None}, "image.image", "required"),
]


@pytest.mark.parametrize("name,changes,field,message", IMAGE_REFUSED, ids=[r[0] for r in IMAGE_REFUSED])
def test_a_bad_image_item_is_refused_naming_its_field(fast, token, name, changes, field, message):
    post(fast, "/v1/products/queue", token, {"system_products": [product_item()]})
    bad = image_item()
    bad["image"].update(changes)
    response = post(fast, "/v1/images/queue", token, {"system_images": [image_item(), bad]})
    assert response.status_code == 400
    assert any(e["index"] == 1 and e["field"] == field and message in e["message"]
               for e in response.json()["errors"]), response.text
    assert [q["kind"] for q in fast.state()["queue"]] == ["product"]


@pytest.mark.parametrize("data", [picture("JPEG"), picture("PNG"), b"\x89PNG\r\n\x1a\n" + b"\0" * (MAX_IMAGE_BYTES - 8)])
def test_a_jpeg_or_png_up_to_2_mb_is_accepted(fast, token, data):
    post(fast, "/v1/products/queue", token, {"system_products": [product_item()]})
    response = post(fast, "/v1/images/queue", token, {"system_images": [image_item(data=data)]})
    assert response.status_code == 200
    assert fast.state()["images"][0]["size"] == len(data)


def test_deleting_a_product_deletes_its_images(fast, token):
    post(fast, "/v1/products/queue", token, {"system_products": [product_item()]})
    post(fast, "/v1/images/queue", token, {"system_images": [image_item()]})
    post(fast, "/v1/products/queue", token, {"system_products": [product_item(source__product_active="0")]})
    assert fast.state()["images"] == []


# ---- search and orders --------------------------------------------------------------------


def test_products_page_by_modified_and_filter_by_sku(fast, token):
    for n in range(5):
        post(fast, "/v1/products/queue", token, {"system_products": [product_item(f"P{n}", f"P{n}-S")]})
    seen, since = [], "0"
    for _ in range(10):  # bounded paging loop
        query = {"query": {"bool": {"filter": [{"range": {"modified": {"gt": since}}}]}},
                 "sort": {"modified": {"order": "asc"}}, "size": 2, "from": 0}
        page = post(fast, "/v1/products/elastic_search", token, query).json()["system_products"]
        if not page:
            break
        seen += [p["source_product_code"] for p in page]
        since = page[-1]["modified"]
    assert seen == ["P0", "P1", "P2", "P3", "P4"]
    by_sku = post(fast, "/v1/products/elastic_search", token,
                  {"query": {"bool": {"filter": [{"terms": {"variants.sku": ["P3-S", "P1-S"]}}]}}}).json()
    assert by_sku["hits"]["total"] == 2
    assert sorted(p["source_product_code"] for p in by_sku["system_products"]) == ["P1", "P3"]
    assert isinstance(by_sku["system_products"][0]["variants"], list)


def test_an_unsupported_search_is_400(fast, token):
    response = post(fast, "/v1/products/elastic_search", token, {"query": {"fuzzy": {"title": "x"}}})
    assert response.status_code == 400 and "fuzzy" in response.json()["error"]


def test_orders_are_queued_and_read_back(fast, token):
    order = {"system_order": {"channel_order_code": "SO-1", "line_items": [{"sku": "P1-S", "qty": 2}]}}
    queued = post(fast, "/v2-queue/order", token, order, client_id=1, channel_id=1)
    assert queued.status_code == 200 and queued.json()["message"] == "order received"
    assert post(fast, "/v2-queue/order", token, order, client_id=1, channel_id=99).status_code == 400
    found = post(fast, "/v1/orders/elastic_search", token,
                 {"query": {"bool": {"filter": [{"term": {"channel_order_code": "SO-1"}}]}}}).json()
    assert [o["channel_order_code"] for o in found["system_orders"]] == ["SO-1"]


# ---- rate limits --------------------------------------------------------------------------


def test_rate_limit_refuses_beyond_the_limit_and_never_below_it(make_sandbox):
    # A fake clock makes this exact (tolerance 0): only the clock decides the window.
    clock = FakeTime()
    sb = make_sandbox(rate=3.0, unauth_rate=1.0, clock=clock)
    token = sb.issue_token()
    get = lambda: requests.get(f"{sb.url}/v1/sources", params={"token": token}, timeout=5)
    assert [get().status_code for _ in range(4)] == [200, 200, 200, 429]
    clock.now += 0.999
    assert get().status_code == 429
    clock.now += 0.001
    statuses = []
    for _ in range(12):  # 3 per second, evenly spaced: never refused
        statuses.append(get().status_code)
        clock.now += 1 / 3
    assert statuses == [200] * 12
    stats = sb.state()["stats"]
    assert stats["responses_429"] == 2 and stats["by_status"] == {"200": 15, "429": 2}


def test_unauthenticated_endpoints_allow_one_per_second_per_client(make_sandbox):
    clock = FakeTime()
    sb = make_sandbox(clock=clock)
    first, second = login(sb), login(sb)
    assert (first.status_code, second.status_code) == (200, 429)
    assert first.headers["x-S2S-RateLimit"] == "1" and second.headers["x-S2S-RateLimit"] == "1"
    clock.now += 1
    assert login(sb).status_code == 200


def test_every_response_names_its_rate_limit(make_sandbox):
    sb = make_sandbox(rate=1.0, unauth_rate=1.0)
    token = sb.issue_token()
    ok = requests.get(f"{sb.url}/v1/sources", params={"token": token}, timeout=5)
    refused = requests.get(f"{sb.url}/v1/sources", params={"token": token}, timeout=5)
    missing = requests.get(f"{sb.url}/v1/nothing", timeout=5)
    assert refused.status_code == 429 and "error" in refused.json()
    assert [r.headers["x-S2S-RateLimit"] for r in (ok, refused, missing)] == ["1", "1", "1"]


def test_rate_limit_in_real_time(sandbox):
    # Real clock: 4 requests sent back to back (well under 1 s on any machine here) -> the 4th is
    # refused; after waiting 1.05 s the window has passed and a request is allowed again.
    token = sandbox.issue_token()
    get = lambda: requests.get(f"{sandbox.url}/v1/sources", params={"token": token}, timeout=5)
    started = time.monotonic()
    statuses = [get().status_code for _ in range(4)]
    if time.monotonic() - started < 0.9:
        assert statuses == [200, 200, 200, 429]
    time.sleep(1.05)
    assert get().status_code == 200
    assert sandbox.state()["stats"]["max_requests_per_second"] >= 3


# ---- faults -------------------------------------------------------------------------------


def statuses_with(sb: Sandbox, token: str, n: int) -> list[int]:
    return [post(sb, "/v1/products/queue", token, {"system_products": [product_item(f"P{i}", f"P{i}-S")]}).status_code
            for i in range(n)]


def test_server_errors_are_seeded_and_not_processed(make_sandbox):
    runs = []
    for _ in range(2):
        sb = make_sandbox(faults=Faults(seed=42, error_rate=0.5), **FAST)
        statuses = statuses_with(sb, sb.issue_token(), 20)
        runs.append(statuses)
        assert set(statuses) - {200} <= {500, 502, 503} and 200 in statuses and len(set(statuses)) > 1
        assert len(sb.state()["products"]) == statuses.count(200)
    assert runs[0] == runs[1]


@pytest.mark.parametrize("retry_after", ["none", "seconds", "date"])
def test_429_bursts_come_every_n_requests_with_the_chosen_retry_after(make_sandbox, retry_after):
    sb = make_sandbox(faults=Faults(burst_every=2, burst_size=2, retry_after=retry_after,
                                    retry_after_seconds=5), **FAST)
    token = sb.issue_token()
    responses = [post(sb, "/v1/products/queue", token, {"system_products": [product_item()]}) for _ in range(6)]
    assert [r.status_code for r in responses] == [200, 200, 429, 429, 200, 200]
    header = responses[2].headers.get("Retry-After")
    if retry_after == "none":
        assert header is None
    elif retry_after == "seconds":
        assert header == "5"
    else:
        assert parsedate_to_datetime(header).tzinfo is not None
    assert sb.state()["stats"]["responses_429"] == 2


def test_latency_delays_the_answer(make_sandbox):
    sb = make_sandbox(faults=Faults(latency=0.3), **FAST)
    token = sb.issue_token()
    started = time.monotonic()
    assert post(sb, "/v1/products/queue", token, {"system_products": [product_item()]}).status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    requests.get(f"{sb.url}/v1/sources", params={"token": token}, timeout=5)
    assert time.monotonic() - started < 0.3, "faults only touch the queue endpoints by default"


def test_a_dropped_connection_was_still_processed(make_sandbox):
    sb = make_sandbox(faults=Faults(drop_rate=1.0), **FAST)
    with pytest.raises(requests.ConnectionError):
        post(sb, "/v1/products/queue", sb.issue_token(), {"system_products": [product_item()]})
    state = sb.state()
    assert [p["source_product_code"] for p in state["products"]] == ["P1"]
    assert state["stats"]["by_status"] == {"dropped": 1}


def test_a_token_expires_after_n_queue_requests(make_sandbox):
    sb = make_sandbox(faults=Faults(expire_after=2), **FAST)
    token = sb.issue_token()
    assert statuses_with(sb, token, 3) == [200, 200, 401]
    assert requests.get(f"{sb.url}/v1/users/valid_token/{token}", timeout=5).status_code == 401
    fresh = login(sb).json()["system_user"]["token"]
    assert statuses_with(sb, fresh, 1) == [200]


def test_faults_can_be_limited_to_chosen_paths_and_switched_at_runtime(make_sandbox):
    sb = make_sandbox(faults=Faults(error_rate=1.0, paths=("/v1/sources",)), **FAST)
    token = sb.issue_token()
    assert requests.get(f"{sb.url}/v1/sources", params={"token": token}, timeout=5).status_code >= 500
    assert statuses_with(sb, token, 1) == [200]
    sb.set_faults(Faults(error_rate=1.0))
    assert statuses_with(sb, token, 1)[0] >= 500
    sb.set_faults(Faults())
    assert statuses_with(sb, token, 1) == [200]


# ---- inspection and life ------------------------------------------------------------------


def test_state_over_http_matches_python_and_reset_keeps_users(fast, token):
    post(fast, "/v1/products/queue", token, {"system_products": [product_item()]})
    over_http = requests.get(f"{fast.url}/_sandbox/state", timeout=5).json()
    assert over_http == fast.state()
    assert set(over_http) >= {"products", "images", "queue", "stats"}
    assert over_http["stats"]["requests"] == 1
    assert requests.post(f"{fast.url}/_sandbox/reset", timeout=5).status_code == 200
    state = fast.state()
    assert (state["products"], state["queue"], state["stats"]["requests"]) == ([], [], 0)
    assert requests.get(f"{fast.url}/v1/sources", params={"token": token}, timeout=5).status_code == 200


def test_state_is_a_copy(fast, token):
    post(fast, "/v1/products/queue", token, {"system_products": [product_item()]})
    state = fast.state()
    copy.deepcopy(state)["products"].clear()
    state["products"][0]["title"] = "changed"
    assert fast.state()["products"][0]["title"] == "Shirt"


def test_stop_is_quick_and_frees_the_port():
    sb = Sandbox(SandboxConfig()).start()
    host, port = sb.url.removeprefix("http://").split(":")
    session = requests.Session()  # holds a keep-alive connection open across stop()
    assert session.get(f"{sb.url}/_sandbox/state", timeout=5).status_code == 200
    started = time.monotonic()
    sb.stop()
    assert time.monotonic() - started < 1.0
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=1).close()
    sb.stop()  # twice is harmless


# ---- command line -------------------------------------------------------------------------


def test_cli_options_become_the_config(tmp_path):
    import argparse

    from connector.sandbox.cli import add_arguments, config_from

    users = tmp_path / "users.yaml"
    users.write_text("users:\n  shop: s3cret\n  other: 1234\n", encoding="utf-8")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = config_from(parser.parse_args([
        "--rate", "1", "--unauth-rate", "0.5", "--token-lifetime", "30", "--seed", "9", "--error-rate", "0.2",
        "--latency", "0.1", "--drop-rate", "0.05", "--burst-every", "10", "--burst-size", "3",
        "--retry-after", "date", "--expire-after", "50", "--users", str(users), "--channels", "2",
        "--search-needs-channel", "--channel-narrows-search"]))
    assert (config.rate, config.unauth_rate, config.token_lifetime) == (1.0, 0.5, 30.0)
    assert (config.channels, config.search_needs_channel, config.channel_narrows_search) == (2, True, True)
    plain = config_from(parser.parse_args([]))
    assert (plain.channels, plain.search_needs_channel, plain.channel_narrows_search) == (1, False, False)
    assert config.users == {"shop": "s3cret", "other": "1234"}
    assert config.faults == Faults(seed=9, error_rate=0.2, latency=0.1, drop_rate=0.05, burst_every=10,
                                   burst_size=3, retry_after="date", expire_after=50)
    help_text = parser.format_help()
    for option in ("--host", "--port", "--rate", "--unauth-rate", "--token-lifetime", "--seed", "--error-rate",
                   "--latency", "--drop-rate", "--burst-every", "--burst-size", "--retry-after", "--expire-after",
                   "--users", "--channels", "--search-needs-channel", "--channel-narrows-search"):
        assert option in help_text


def test_cli_serves_until_sigterm():
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-m", "connector.sandbox.cli", "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        url = first.split(" on ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        assert "demo / demo" in process.stdout.readline()
        assert requests.get(f"{url}/_sandbox/state", timeout=5).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def test_an_in_process_sandbox_puts_the_sigterm_handler_back():
    """`connector sandbox` run inside a process that goes on (tests, embedding) leaves SIGTERM as it found it,
    when SIGTERM stopped it and when it could not start."""
    import argparse
    import io
    import os
    import signal
    import socket
    import threading

    from connector.sandbox.cli import add_arguments, run

    assert threading.current_thread() is threading.main_thread()  # Python sets signal handlers only there
    taken: list[int] = []

    def ours(signum, _frame):
        taken.append(signum)
        raise KeyboardInterrupt  # the sandbox did not take SIGTERM: stop it anyway, the test then fails

    class Out(io.StringIO):
        started = threading.Event()

        def write(self, text: str) -> int:
            if "Stop:" in text:
                self.started.set()
            return super().write(text)

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    previous = signal.signal(signal.SIGTERM, ours)
    try:
        out = Out()
        sender = threading.Thread(target=lambda: out.started.wait(10) and os.kill(os.getpid(), signal.SIGTERM))
        sender.start()
        assert run(parser.parse_args(["--port", "0"]), out=out) == 0
        sender.join(10)
        assert "Sandbox stopped." in out.getvalue() and taken == []  # the sandbox's own handler stopped it
        assert signal.getsignal(signal.SIGTERM) is ours

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            assert run(parser.parse_args(["--port", str(busy.getsockname()[1])]), out=io.StringIO()) == 2
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)
