# syntax=docker/dockerfile:1
#
# mdb-runtime image.
#   docker build -t mdb-runtime .
#   docker run -p 27100:27100 -p 27180:27180 -e MDB_UPSTREAM_URI='mongodb://user:pass@db:27017/' mdb-runtime
# The example config is baked in at /app/config; mount your own there (runtime.yaml and apps/*.yaml).
# The process handles SIGTERM/SIGINT itself (drains, then exits 0), so it can run as PID 1.

ARG NODE_VERSION=22

# ---- build: install all dependencies and compile TypeScript to dist/ ----
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Only the compiler is needed here; install scripts (native add-ons of dev tools such as mongosh) are not,
# nor this package's `prepare` (scripts/prepare.mjs builds dist/ in a clone; the next steps build it here).
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and the compiled code, run as a non-root user ----
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=optional: the driver's optional peers (kerberos, client-side encryption, AWS/GCP auth, snappy,
# zstd) reach the lockfile through dev tools; the proxy's upstream auth (SCRAM, PLAIN, X.509, TLS) needs
# none of them, and leaving them out takes node_modules from about 110 packages to about 30.
RUN npm ci --omit=dev --omit=optional --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
# Listen on every interface inside the container (the built-in defaults are loopback only). These
# variables win over runtime.yaml (flag > env > file): change them with `docker run -e MDB_LISTEN=...`.
ENV MDB_LISTEN=0.0.0.0:27100 \
    MDB_HTTP_LISTEN=0.0.0.0:27180
# The official image's unprivileged user (uid 1000); /app stays owned by root, read-only for it.
USER node
EXPOSE 27100 27180
# Liveness from /healthz on the HTTP port named by MDB_HTTP_LISTEN (the image has node, not curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["node", "-e", "const p=(process.env.MDB_HTTP_LISTEN||'').split(':').pop()||'27180';require('http').get({host:'127.0.0.1',port:+p,path:'/healthz'},r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"]
ENTRYPOINT ["node", "dist/cli/main.js"]
CMD ["serve", "--config", "/app/config"]
