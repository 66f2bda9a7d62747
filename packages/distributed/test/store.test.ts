import net from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { StoreServer } from "../src/store/server";
import { TcpStore } from "../src/store/client";
import { StoreBindError, StoreConnectionError, StoreRequestError, StoreTimeoutError, StoreTokenMismatchError } from "../src/errors";
import { connect, startStore } from "./helpers";

const text = (b: Uint8Array) => new TextDecoder().decode(b);

const opened: { close(): Promise<void> }[] = [];
afterEach(async () => {
  for (const o of opened.splice(0).reverse()) await o.close();
});
async function server(token?: string) {
  const s = await startStore(token);
  opened.push(s);
  return s;
}
async function client(s: StoreServer, options?: { token?: string; timeoutMs?: number }) {
  const c = await connect(s, options);
  opened.push(c);
  return c;
}

describe("TcpStore", () => {
  it("sets, gets (strings and bytes), deletes", async () => {
    const s = await server();
    const a = await client(s);
    const b = await client(s);
    await a.set("k", "v1");
    expect(text(await b.get("k"))).toBe("v1");
    await a.set("bin", Uint8Array.of(0, 255, 7));
    expect(Array.from(await b.get("bin"))).toEqual([0, 255, 7]);
    await a.set("empty", "");
    expect((await b.get("empty")).byteLength).toBe(0);
    expect(await b.delete("k")).toBe(true);
    expect(await b.delete("k")).toBe(false);
    await expect(a.get("k", 50)).rejects.toThrow(StoreTimeoutError);
  });

  it("get waits until another client sets the key", async () => {
    const s = await server();
    const a = await client(s);
    const b = await client(s);
    const pending = a.get("later", 5_000);
    await new Promise((r) => setTimeout(r, 30));
    await b.set("later", "here");
    expect(text(await pending)).toBe("here");
  });

  it("wait resolves when every key exists and times out naming the missing ones", async () => {
    const s = await server();
    const a = await client(s);
    await a.set("x", "1");
    const both = a.wait(["x", "y"], 5_000);
    await a.set("y", "2");
    await expect(both).resolves.toBeUndefined();
    const err = await a.wait(["x", "missing1", "missing2"], 100).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreTimeoutError);
    expect((err as StoreTimeoutError).keys).toEqual(["missing1", "missing2"]);
    expect((err as Error).message).toMatch(/timed out after 100 ms/);
    expect((err as Error).message).toContain('waiting for key(s) "missing1", "missing2" to be set');
  });

  it("get times out with the key and the timeout in the message", async () => {
    const s = await server();
    const a = await client(s, { timeoutMs: 80 });
    const started = Date.now();
    const err = await a.get("never").catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(err).toBeInstanceOf(StoreTimeoutError);
    expect((err as Error).message).toMatch(/get\("never"\).*80 ms.*"never"/);
  });

  it("add counts atomically across many concurrent clients", async () => {
    const s = await server();
    const clients = await Promise.all(Array.from({ length: 8 }, () => client(s)));
    const results = await Promise.all(clients.flatMap((c) => Array.from({ length: 25 }, () => c.add("counter", 1))));
    expect(results.length).toBe(200);
    expect(new Set(results).size).toBe(200); // every add saw a distinct value
    expect(Math.max(...results)).toBe(200);
    expect(await clients[0].add("counter", -50)).toBe(150);
    expect(text(await clients[1].get("counter"))).toBe("150");
  });

  it("add refuses a key that is not an integer and amounts that are not", async () => {
    const s = await server();
    const a = await client(s);
    await a.set("word", "hello");
    await expect(a.add("word", 1)).rejects.toThrow(StoreRequestError);
    await expect(a.add("word", 1)).rejects.toThrow(/not an integer counter/);
    await expect(a.add("n", 1.5)).rejects.toThrow(/amount: got 1.5/);
  });

  it("compareSet: absent matches empty, one winner among racers", async () => {
    const s = await server();
    const clients = await Promise.all(Array.from({ length: 6 }, () => client(s)));
    const results = await Promise.all(clients.map((c, i) => c.compareSet("leader", "", `rank${i}`)));
    const winner = text(results[0]);
    expect(winner).toMatch(/^rank\d$/);
    // Every racer sees the same stored value: exactly one of them set it.
    expect(results.map(text)).toEqual(Array(6).fill(winner));
    // A wrong expectation changes nothing and returns the stored value.
    expect(text(await clients[0].compareSet("leader", "nobody", "x"))).toBe(winner);
    expect(text(await clients[0].compareSet("leader", winner, "next"))).toBe("next");
    // An absent key with a non-empty expectation stays absent.
    expect((await clients[0].compareSet("absent", "something", "x")).byteLength).toBe(0);
    expect(await clients[0].delete("absent")).toBe(false);
  });

  it("compare-and-set increments from many clients never lose an update", async () => {
    const s = await server();
    const clients = await Promise.all(Array.from({ length: 4 }, () => client(s)));
    await clients[0].set("v", "0");
    let attempts = 0;
    await Promise.all(
      clients.map(async (c, id) => {
        for (let done = 0; done < 10; ) {
          const cur = text(await c.get("v"));
          // The writer's id makes each proposed value unique, so "stored == mine" means "I won".
          const next = `${Number(cur.split(":")[0]) + 1}:${id}`;
          attempts++;
          if (text(await c.compareSet("v", cur, next)) === next) done++;
        }
      }),
    );
    expect(text(await clients[0].get("v")).split(":")[0]).toBe("40");
    expect(attempts).toBeGreaterThanOrEqual(40);
  });

  it("refuses a client with the wrong token", async () => {
    const s = await server("right");
    const err = await TcpStore.connect({ host: "127.0.0.1", port: s.port, token: "wrong" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreTokenMismatchError);
    expect((err as Error).message).toMatch(/store token mismatch/);
    // The server is unharmed for the right token.
    const ok = await client(s, { token: "right" });
    await ok.set("a", "b");
  });

  it("drops a raw connection that sends garbage, without failing others", async () => {
    const s = await server();
    const good = await client(s);
    await new Promise<void>((resolve) => {
      const raw = net.connect({ host: "127.0.0.1", port: s.port }, () => raw.write("GET / HTTP/1.1\r\n\r\n"));
      raw.on("close", () => resolve());
      raw.on("error", () => resolve());
    });
    await good.set("still", "fine");
    expect(text(await good.get("still"))).toBe("fine");
  });

  it("reports a port in use naming the port and MASTER_PORT", async () => {
    const s = await server();
    const err = await StoreServer.start({ host: "127.0.0.1", port: s.port, token: "" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreBindError);
    expect((err as Error).message).toContain(`port ${s.port}`);
    expect((err as Error).message).toContain("MASTER_PORT");
  });

  it("fails pending requests when the server goes away, and fails to connect when it is absent", async () => {
    const s = await startStore();
    const a = await connect(s);
    opened.push(a);
    const pending = a.get("never", 10_000);
    await s.close();
    await expect(pending).rejects.toThrow(StoreConnectionError);
    await expect(a.set("x", "y")).rejects.toThrow(StoreConnectionError);
    const err = await TcpStore.connect({ host: "127.0.0.1", port: s.port, token: "", connectTimeoutMs: 200 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreConnectionError);
    expect((err as Error).message).toMatch(/MASTER_ADDR\/MASTER_PORT/);
  });

  it("connects to a server that starts after the client began trying", async () => {
    const probe = await startStore();
    const port = probe.port;
    await probe.close();
    const connecting = TcpStore.connect({ host: "127.0.0.1", port, token: "t", connectTimeoutMs: 5_000 });
    await new Promise((r) => setTimeout(r, 150));
    const s = await StoreServer.start({ host: "127.0.0.1", port, token: "t" });
    opened.push(s);
    const c = await connecting;
    opened.push(c);
    await c.set("k", "v");
    expect(s.size).toBe(1);
  });

  it("rejects bad arguments naming them", async () => {
    const s = await server();
    const a = await client(s);
    await expect(a.set("", "v")).rejects.toThrow(/store key: got ""/);
    await expect(a.get("k", -1)).rejects.toThrow(/timeoutMs: got -1/);
  });
});
