import http from 'node:http';
import type net from 'node:net';
import { registerAppsRoute } from './apps-view.js';
import { registerHealthRoutes } from './health.js';
import { registerMetricsRoute } from './metrics.js';
import type { Router } from './router.js';
import { registerStatusPageRoute } from './status-page.js';

/** What the observability routes answer from: the single process's runtime, or the primary of `serve --workers N`. */
export interface HealthSource {
  /** Upstream reachable and manifests loaded, or the reason not. */
  readiness(): Promise<{ ready: boolean; detail: Record<string, unknown> }>;
  /** The /apps document: every app, its status, usage and index state (no /apps route without it). */
  apps?(): unknown;
  /** GET /metrics: the Prometheus text exposition (no /metrics route without it). */
  metrics?(): Promise<{ contentType: string; text: string }>;
}

/**
 * Registers observability's routes, each owned by its module: the status page at / (status-page.ts),
 * /healthz and /readyz (health.ts), /apps (apps-view.ts) and /metrics (metrics.ts).
 */
export function registerObservabilityRoutes(router: Router, health: HealthSource): Router {
  registerStatusPageRoute(router);
  registerHealthRoutes(router, () => health.readiness());
  if (health.apps) registerAppsRoute(router, health.apps.bind(health));
  if (health.metrics) registerMetricsRoute(router, health.metrics.bind(health));
  return router;
}

/** The HTTP listener: every request goes to the route table its parts registered on. */
export class HttpServer {
  private readonly server: http.Server;

  constructor(readonly router: Router) {
    this.server = http.createServer((req, res) => void router.handle(req, res));
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
}
