# nbd-vault server image (Node 24 LTS, Debian 12).
#   docker build -t nbd-vault .
#   docker run --init -p 10809:10809 -v vault-keys:/keys -v vault-data:/data -v vault-state:/state \
#     -v /etc/nbd-vault/keys.psk:/tls/keys.psk:ro -e NBD_VAULT_TLS_PSK=/tls/keys.psk nbd-vault
# Listening on 0.0.0.0 needs TLS, or NBD_VAULT_INSECURE_NO_TLS=1 (see README, TLS).
# Back up the /keys volume: losing it loses every volume (see keys/README.md).
# The same steps run outside Docker (CI): npm ci && npm run build && npm prune --omit=dev.
# NODE_IMAGE picks another base with the same layout (a mirror, or the locally made image the
# container test builds from Debian packages: test/e2e/container.test.ts).
ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: compile TypeScript and the native modules (zstd-napi builds with node-gyp) ----
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
RUN JOBS=max npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: Node, production dependencies, compiled sources; non-root ----
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    NBD_VAULT_KEYS=/keys \
    NBD_VAULT_STORE=/data \
    NBD_VAULT_STATE=/state
WORKDIR /app
# Application files stay owned by root: the server user can read, not modify, them.
COPY --from=build /app/package.json /app/package-lock.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/bin ./bin
COPY --from=build /app/dist/src ./dist/src
# Created before VOLUME so that new named volumes inherit the owner and modes.
RUN mkdir -p /keys /data /state \
 && chown node:node /keys /data /state \
 && chmod 0700 /keys /state
USER node
EXPOSE 10809
VOLUME ["/keys", "/data", "/state"]
ENTRYPOINT ["node", "/app/bin/nbd-vault.js"]
CMD ["serve", "--listen", "0.0.0.0:10809"]
