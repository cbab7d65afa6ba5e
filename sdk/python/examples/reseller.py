"""A reseller's whole flow: list stock, buy a container, wait for the order,
read the credentials, rebuild, wait, generate a password, and receive and
verify a webhook. Run it with ADVPS_API_KEY (and ADVPS_BASE_URL unless the
server is on http://127.0.0.1:8080):

    ADVPS_API_KEY=sk_test_... python examples/reseller.py

The webhook receiver listens on 127.0.0.1: the server must allow private
destinations (``webhook_allow_private = true``) for it to be reached.
"""

import http.server
import queue
import re
import threading

from advps import Client, verify_webhook

events: "queue.Queue[dict]" = queue.Queue()
secret = ""


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            events.put(verify_webhook(secret, dict(self.headers.items()), body))
            self.send_response(204)
        except Exception:  # not from advps: refuse it
            self.send_response(400)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


with Client() as client:  # ADVPS_API_KEY, ADVPS_BASE_URL from the environment
    # 1. Stock: the first Linux container product in stock, across all pages.
    product = next(r for r in client.products.stock_all(type="linux") if r["stockStatus"] != "OUT_OF_STOCK")
    print(f"buying {product['name']} ({product['stock']} left)")

    # 2. Buy it and wait for the order; the credentials come with the completed order.
    ram = re.match(r"(\d+)\s*GB", product["packName"], re.I).group(1) + " GB"
    placed = client.purchase.linux(product_id=product["id"], ram=ram, os_id="debian-12")
    order = client.wait_for_order(placed["order"]["orderId"], timeout=120)
    service = order["services"][0]
    print(f"order {order['order']['orderId']} {order['order']['status']}: "
          f"{service['serviceId']} {service['username']}@{service.get('ip') or '(no address yet)'}")

    # 3. A webhook endpoint, and a receiver that verifies what it is sent.
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    hook = client.webhooks.create(url=f"http://127.0.0.1:{httpd.server_address[1]}/advps",
                                  events=["task.completed", "task.failed"])
    secret = hook["secret"] or ""

    # 4. Rebuild to another OS and wait for the task (polls cost no quota while unchanged).
    task_id = client.services.rebuild(service["serviceId"], os="ubuntu-24.04")["taskId"]
    print(f"rebuild {client.wait_for_task(task_id, timeout=300)['status']}")

    # 5. A new root password, shown once.
    password = client.services.generate_password(service["serviceId"])["password"]
    print(f"new password: {len(password)} characters")

    # 6. The signed event of the rebuild.
    event = events.get(timeout=60)
    print(f"webhook verified: {event['type']} for task {event['data']['taskId']}")

    client.webhooks.delete(hook["id"])
    httpd.shutdown()
    print(f"quota left: {client.rate_limit.remaining if client.rate_limit else '?'}")
