import http from 'node:http';
import type net from 'node:net';
import { serveStatusPage } from './status-page.js';

export interface HealthSource {
  /** Upstream reachable and manifests loaded, or the reason not. */
  readiness(): Promise<{ ready: boolean; detail: Record<string, unknown> }>;
  /** The /apps document: every app, its status, usage and index state. */
  apps?(): unknown;
  /** GET /metrics: the Prometheus text exposition. */
  metrics?(): Promise<{ contentType: string; text: string }>;
}

/** The HTTP side: /healthz (alive), /readyz (able to serve) and /apps (the apps and their state). */
export class HttpServer {
  private readonly server: http.Server;

  constructor(private readonly health: HealthSource) {
    this.server = http.createServer((req, res) => void this.route(req, res));
  }

  listen(host: string, port: number): Promise<net.AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.off('error', reject);
        resolve(this.server.address() as net.AddressInfo);
      });
    });
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'method not allowed' });
    switch (path) {
      case '/':
        return serveStatusPage(res);
      case '/healthz':
        return send(res, 200, { status: 'ok' });
      case '/readyz': {
        const { ready, detail } = await this.health.readiness();
        return send(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready', ...detail });
      }
      case '/apps':
        if (this.health.apps) {
          let doc: unknown;
          try {
            doc = await this.health.apps();
          } catch (err) {
            return send(res, 500, { error: `cannot describe the apps: ${(err as Error).message}` });
          }
          return send(res, 200, doc);
        }
        return send(res, 404, { error: `no such endpoint: ${path}` });
      case '/metrics': {
        if (!this.health.metrics) return send(res, 404, { error: `no such endpoint: ${path}` });
        let scraped: { contentType: string; text: string };
        try {
          scraped = await this.health.metrics();
        } catch (err) {
          return send(res, 500, { error: `cannot collect the metrics: ${(err as Error).message}` });
        }
        res.writeHead(200, { 'content-type': scraped.contentType, 'content-length': Buffer.byteLength(scraped.text) });
        res.end(req.method === 'HEAD' ? undefined : scraped.text);
        return;
      }
      default:
        return send(res, 404, { error: `no such endpoint: ${path}` });
    }
  }
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}
