"""The sandbox's memory: products, images, orders and the one queue log.

Not thread-safe on its own: the server calls it under its one lock. Items arrive already
checked (rules.py); applying them is processing the queue, in arrival order.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any


class Store:
    """Products keyed by source_product_code (one source), their images, orders, the queue log."""

    def __init__(self, source_id: int, client_id: int, now: Callable[[], datetime] | None = None):
        self.source_id = source_id
        self.client_id = client_id
        self._now = now or (lambda: datetime.now(UTC))
        self.clear()

    def clear(self) -> None:
        self.products: dict[str, dict] = {}
        self.images: dict[tuple[str, str], dict] = {}  # (product code, image_id) -> record
        self.orders: list[dict] = []
        self.queue: list[dict] = []
        self._ids = itertools.count(1)
        self._last_stamp = ""

    # ---- time and log -----------------------------------------------------------------

    def stamp(self) -> str:
        """A "YYYY-MM-DD HH:MM:SS.ffffff" time, strictly after the previous one, so paging by
        `modified` never skips or repeats a product."""
        moment = self._now()
        text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
        while text <= self._last_stamp:
            moment += timedelta(microseconds=1)
            text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")
        self._last_stamp = text
        return text

    def log(self, kind: str, code: str, variant: str | None, image_id: str | None,
            status: str, action: str, reason: str | None) -> None:
        self.queue.append({"seq": len(self.queue) + 1, "kind": kind, "source_id": self.source_id,
                           "source_product_code": code, "source_variant_code": variant,
                           "image_id": image_id, "status": status, "action": action,
                           "reason": reason, "at": self.stamp()})

    # ---- products ---------------------------------------------------------------------

    def stored_variants(self, code: str) -> dict[str, tuple[frozenset[int], tuple]]:
        """source_variant_code -> (filled option positions, option values) of a stored product."""
        product = self.products.get(code)
        if not product:
            return {}
        return {v: (rec["_filled"], rec["_combo"]) for v, rec in product["_variants"].items()}

    def apply_product(self, normal: dict) -> None:
        """Upsert or delete one checked item (rules.normalize_product) and log it."""
        code, variant_code = normal["source_product_code"], normal["source_variant_code"]
        if not normal["active"]:
            self._delete_variant(code, variant_code)
            return
        product = self.products.get(code)
        current = product["_variants"].get(variant_code) if product else None
        if current and current["_hash"] == normal["hash"]:
            self.log("product", code, variant_code, None, "accepted", "unchanged",
                     "identical to what is stored")
            return
        now = self.stamp()
        if product is None:
            product = self.products[code] = {
                "id": next(self._ids), "created": now, "client_id": self.client_id,
                "source_id": self.source_id, "source_product_code": code, "active": True,
                "channels": [], "_variants": {}, "_images": []}
        product.update(normal["product"], modified=now)
        variant = dict(normal["variant"], active=True, product_id=product["id"], client_id=self.client_id,
                       _hash=normal["hash"], _filled=normal["filled"], _combo=normal["combo"])
        variant["id"] = current["id"] if current else next(self._ids)
        variant["image_id"] = current.get("image_id") if current else None
        product["_variants"][variant_code] = variant
        product["hash"] = hashlib.md5(repr(sorted(v["_hash"] for v in product["_variants"].values()))
                                      .encode()).hexdigest()
        self.log("product", code, variant_code, None, "accepted", "updated" if current else "created", None)

    def _delete_variant(self, code: str, variant_code: str) -> None:
        product = self.products.get(code)
        if not product or variant_code not in product["_variants"]:
            self.log("product", code, variant_code, None, "accepted", "unchanged",
                     "nothing to delete: no such variant")
            return
        del product["_variants"][variant_code]
        product["modified"] = self.stamp()
        if product["_variants"]:
            self.log("product", code, variant_code, None, "accepted", "deleted", "variant deleted")
            return
        del self.products[code]
        for key in [k for k in self.images if k[0] == code]:
            del self.images[key]
        self.log("product", code, variant_code, None, "accepted", "deleted",
                 "variant deleted; product deleted with its images (no variants left)")

    # ---- images -----------------------------------------------------------------------

    def apply_image(self, normal: dict) -> None:
        """Attach one checked image (rules.normalize_image) to its product, or fail it in the
        log when the product (or the variant it names) does not exist now."""
        code, variant_code, image_id = (normal["source_product_code"], normal["source_variant_code"],
                                        normal["image_id"])
        product = self.products.get(code)
        if product is None:
            self.log("image", code, variant_code, image_id, "failed", "none", f"product {code!r} does not exist")
            return
        if variant_code and variant_code not in product["_variants"]:
            reason = f"variant {variant_code!r} of product {code!r} does not exist"
            self.log("image", code, variant_code, image_id, "failed", "none", reason)
            return
        data = normal["data"]
        sha256 = hashlib.sha256(data).hexdigest()
        current = self.images.get((code, image_id))
        if current and current["sha256"] == sha256 and current["main"] == normal["main"] \
                and current["source_variant_code"] == variant_code:
            self.log("image", code, variant_code, image_id, "accepted", "unchanged",
                     "identical to what is stored")
            return
        if normal["main"]:
            for other in self.images.values():
                if other["source_product_code"] == code:
                    other["main"] = False
        md5 = hashlib.md5(data).hexdigest()
        ext = "jpg" if normal["format"] == "jpeg" else "png"
        self.images[(code, image_id)] = {
            "id": current["id"] if current else next(self._ids),
            "source_product_code": code, "source_variant_code": variant_code, "image_id": image_id,
            "sha256": sha256, "hash": md5, "size": len(data), "format": normal["format"],
            "main": normal["main"], "storage_code": f"{md5}.{ext}", "created": self.stamp()}
        if variant_code:
            product["_variants"][variant_code]["image_id"] = self.images[(code, image_id)]["id"]
        product["modified"] = self.stamp()
        self.log("image", code, variant_code, image_id, "accepted", "updated" if current else "created", None)

    # ---- orders -----------------------------------------------------------------------

    def add_order(self, payload: Any, channel_id: int) -> dict:
        """Store a queued order; returns the queue message the API answers with."""
        now = self.stamp()
        body = payload.get("system_order", payload) if isinstance(payload, dict) else {"payload": payload}
        order = dict(body) if isinstance(body, dict) else {"payload": body}
        order.update(id=next(self._ids), created=now, modified=now, channel_id=channel_id,
                     client_id=self.client_id)
        order.setdefault("status", "ordered")
        self.orders.append(order)
        return {"key": f"{self.client_id}-{channel_id}/{now}-sync_order.json", "message_id": str(uuid.uuid4())}

    # ---- views ------------------------------------------------------------------------

    def product_view(self, code: str) -> dict:
        """A product in the API's stored shape: fields, `variants` as a list, `images`."""
        product = self.products[code]
        view = {k: copy.deepcopy(v) for k, v in product.items() if not k.startswith("_")}
        view["variants"] = [{k: copy.deepcopy(v) for k, v in variant.items() if not k.startswith("_")}
                            for variant in product["_variants"].values()]
        view["images"] = [self._image_view(product, image) for (c, _), image in self.images.items() if c == code]
        return view

    def _image_view(self, product: dict, image: dict) -> dict:
        return {"id": image["id"], "created": image["created"], "source_image_code": image["image_id"],
                "storage_code": image["storage_code"], "src": f"sandbox://images/{image['storage_code']}",
                "client_id": self.client_id, "product_id": product["id"], "active": True,
                "hash": image["hash"], "main": image["main"]}

    def snapshot(self) -> dict:
        """Products (stored shape), images (with hash and size), the queue log and orders."""
        return {
            "products": [self.product_view(code) for code in self.products],
            "images": [{k: image[k] for k in ("source_product_code", "source_variant_code", "image_id",
                                              "sha256", "size", "format", "main")}
                       for image in self.images.values()],
            "queue": copy.deepcopy(self.queue),
            "orders": copy.deepcopy(self.orders),
        }
