/** Splits "host:port" or "[v6]:port" as the driver reports server addresses. */
export function parseAddress(address: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(address) ?? /^([^:]+):(\d+)$/.exec(address);
  if (!m) return { host: address, port: 27017 };
  return { host: m[1]!, port: Number(m[2]) };
}
