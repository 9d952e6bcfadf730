import { EventEmitter } from 'node:events';
import { MongoClient, type MongoClientOptions, type ServerDescription, type TopologyDescription } from 'mongodb';
import { UpstreamError } from './errors.js';

/** A server the data plane may send commands to. */
export interface SelectedServer {
  address: string;
  type: string;
  maxWireVersion: number;
}

const WRITABLE = new Set(['Standalone', 'RSPrimary', 'Mongos', 'LoadBalancer']);

/**
 * The upstream deployment as the official driver sees it. The driver does discovery and monitoring
 * (standalone, replica set, sharded, SRV, TLS, credentials); the data plane asks it which server to use.
 * The same client serves the control plane's own work (index reconciliation, health).
 */
export class UpstreamTopology extends EventEmitter {
  private description: TopologyDescription | undefined;
  private candidatesOf: TopologyDescription | undefined | null = null;
  private candidates: ServerDescription[] = [];
  private single: SelectedServer | undefined;
  private mongosCursor = 0;

  private constructor(readonly client: MongoClient) {
    super();
    this.setMaxListeners(0);
    client.on('topologyDescriptionChanged', (event) => {
      this.description = event.newDescription;
      this.emit('changed', event.newDescription);
    });
  }

  static async connect(uri: string, options: MongoClientOptions = {}): Promise<UpstreamTopology> {
    const client = new MongoClient(uri, { appName: 'mdb-runtime', ...options });
    const topology = new UpstreamTopology(client);
    await client.connect();
    await client.db('admin').command({ ping: 1 });
    return topology;
  }

  get type(): string {
    return this.description?.type ?? 'Unknown';
  }

  /** All known servers with their type, for logs and health. */
  servers(): ServerDescription[] {
    return this.description ? [...this.description.servers.values()] : [];
  }

  /** A writable server now, or undefined: the primary, the standalone, or one mongos (round-robin). */
  trySelect(): SelectedServer | undefined {
    // The writable servers of the current description, computed once per description (every request selects).
    if (this.candidatesOf !== this.description) {
      this.candidatesOf = this.description;
      this.candidates = this.servers().filter((s) => WRITABLE.has(s.type));
      this.single =
        this.candidates.length === 1
          ? { address: this.candidates[0]!.address, type: this.candidates[0]!.type, maxWireVersion: this.candidates[0]!.maxWireVersion }
          : undefined;
    }
    if (this.single) return this.single;
    const candidates = this.candidates;
    if (candidates.length === 0) return undefined;
    let chosen = candidates[0]!;
    if (candidates.length > 1) {
      // Several mongos: spread load over those within 15 ms of the fastest, as drivers do.
      const fastest = Math.min(...candidates.map((s) => s.roundTripTime));
      const near = candidates.filter((s) => s.roundTripTime <= fastest + 15);
      chosen = near[this.mongosCursor++ % near.length]!;
    }
    return { address: chosen.address, type: chosen.type, maxWireVersion: chosen.maxWireVersion };
  }

  /**
   * Waits up to `timeoutMS` for a writable server (an election, an upstream restart). Meanwhile a ping
   * through the driver keeps its monitors checking every half second instead of every heartbeat (10 s):
   * the driver checks at once only for its own operations waiting on server selection, and the data
   * plane's requests are not the driver's.
   */
  async select(timeoutMS: number): Promise<SelectedServer> {
    const now = this.trySelect();
    if (now) return now;
    this.wakeMonitors(timeoutMS);
    return new Promise<SelectedServer>((resolve, reject) => {
      const onChange = () => {
        const s = this.trySelect();
        if (!s) return;
        clearTimeout(timer);
        this.off('changed', onChange);
        resolve(s);
      };
      const timer = setTimeout(() => {
        this.off('changed', onChange);
        reject(new UpstreamError(`no writable upstream server found within ${timeoutMS} ms`));
      }, timeoutMS);
      this.on('changed', onChange);
    });
  }

  private waking: Promise<unknown> | undefined;

  private wakeMonitors(timeoutMS: number): void {
    if (this.waking) return;
    this.waking = this.client
      .db('admin')
      .command({ ping: 1 }, { signal: AbortSignal.timeout(timeoutMS) })
      .catch(() => undefined)
      .finally(() => (this.waking = undefined));
  }

  /**
   * Whether the upstream is a standalone server: its last writable server's type (kept through an
   * outage, so that the proxy's handshake does not change while the server is away).
   */
  isStandalone(): boolean {
    const type = this.trySelect()?.type;
    if (type !== undefined) this.lastType = type;
    return this.lastType === 'Standalone';
  }

  private lastType: string | undefined;

  /** The wire version the proxy may claim: what the selected upstream server speaks. */
  maxWireVersion(): number | undefined {
    return this.trySelect()?.maxWireVersion;
  }

  /** One line for the startup log: "replica set rs0, primary db1:27017 (wire 21)". */
  describe(): string {
    const selected = this.trySelect();
    const servers = this.servers();
    const where = selected ? `${selected.type} ${selected.address} (maxWireVersion ${selected.maxWireVersion})` : 'no writable server yet';
    return `${this.type} topology, ${servers.length} server(s); using ${where}`;
  }

  async close(): Promise<void> {
    await this.client.close();
  }
}
