/**
 * Finding a free TCP port, asynchronously (the normal way) and synchronously (for
 * `ClusterEnvironment.mainPort()`, which the contract makes synchronous while Node has no
 * synchronous sockets: a short-lived child process binds port 0 and reports what it got).
 * Either way another process may take the port before it is used; callers that bind it report
 * that clearly (StoreBindError) rather than guard against it.
 */
import net from "node:net";
import { execFileSync } from "node:child_process";

export async function findFreePort(host = "127.0.0.1"): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen({ host, port: 0, exclusive: true }, () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function findFreePortSync(host = "127.0.0.1"): number {
  const script =
    "const s=require('net').createServer();" +
    `s.listen({host:${JSON.stringify(host)},port:0,exclusive:true},()=>{process.stdout.write(String(s.address().port));s.close()})`;
  const out = execFileSync(process.execPath, ["-e", script], { encoding: "utf8", timeout: 10_000 });
  const port = Number(out.trim());
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`could not find a free port on ${host} (got ${JSON.stringify(out)})`);
  return port;
}

/** Resolves true when `port` can be bound on `host` right now. */
export async function isPortFree(host: string, port: number): Promise<boolean> {
  const server = net.createServer();
  const ok = await new Promise<boolean>((resolve) => {
    server.once("error", () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => resolve(true));
  });
  if (ok) await new Promise<void>((resolve) => server.close(() => resolve()));
  return ok;
}
