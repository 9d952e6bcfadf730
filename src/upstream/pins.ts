/**
 * Transactions pinned to the upstream server that started them (several mongos: every statement and
 * the commit must reach the same one). Keyed by owner and session id; shared by all client connections
 * because a driver may run a transaction's statements over several pooled connections. A pin is
 * released when its transaction's commit succeeds or its abort is answered (Router.settle); the sweep
 * forgets those whose client never finished them.
 */
export class TransactionPins {
  private readonly pins = new Map<string, { address: string; lastUsed: number }>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly idleTimeoutMS = 30 * 60_000) {
    this.sweeper = setInterval(() => this.sweep(), 60_000);
    this.sweeper.unref();
  }

  pin(key: string, address: string): void {
    this.pins.set(key, { address, lastUsed: Date.now() });
  }

  lookup(key: string): string | undefined {
    const pin = this.pins.get(key);
    if (pin) pin.lastUsed = Date.now();
    return pin?.address;
  }

  unpin(key: string): void {
    this.pins.delete(key);
  }

  close(): void {
    clearInterval(this.sweeper);
    this.pins.clear();
  }

  private sweep(): void {
    const cutoff = Date.now() - this.idleTimeoutMS;
    for (const [key, pin] of this.pins) if (pin.lastUsed < cutoff) this.pins.delete(key);
  }
}
