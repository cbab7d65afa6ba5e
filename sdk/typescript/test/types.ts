// Compiled by `tsc` (never run): the declarations type what the client
// returns and refuse what the API does not take.

import { Advps, AdvpsError, verifyWebhook, type Data_TaskData, type StockRow } from "advps";

async function typed(client: Advps): Promise<void> {
  const stock = await client.products.stock({ type: "linux", page: 1, limit: 10 });
  const first: StockRow | undefined = stock.stock[0];
  const pages: number = stock.pagination.totalPages;
  for await (const row of client.products.stockAll({ type: "vps" })) {
    const id: string = row.id;
    void id;
  }
  const rebuild = await client.services.rebuild("vps_service_1", { os: "debian-12" });
  const task: Data_TaskData = await client.waitForTask(rebuild.taskId, { timeoutMs: 60_000 });
  const status: "PENDING" | "IN_PROGRESS" | "COMPLETED" | "FAILED" = task.status;
  const me = await client.me();
  const remaining: number = me.rateLimit.remaining;
  // @ts-expect-error rebuild needs an os
  await client.services.rebuild("vps_service_1", {});
  // @ts-expect-error the stock filter is linux or vps
  await client.products.stock({ type: "windows" });
  try {
    await client.services.start("x");
  } catch (e) {
    if (e instanceof AdvpsError) {
      const s: number = e.status;
      void s;
    }
  }
  const event = await verifyWebhook<{ type: string }>("whsec_x", new Headers(), "{}");
  void [first, pages, status, remaining, event.type];
}
void typed;
