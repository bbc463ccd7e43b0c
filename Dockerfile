# The partflow worker: compiled TypeScript, production dependencies only.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src src
COPY operator operator
COPY activities activities
COPY workflows workflows
COPY worker worker
COPY demo demo
COPY test test
COPY bench bench
COPY sql sql
RUN npx tsc -p tsconfig.json && node dist/worker/bundle.js dist/workflow-bundle.js && npm prune --omit=dev

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist dist
COPY --from=build /app/package.json package.json
COPY bin bin
COPY sql sql
# psql, for the "dump" archive mode of maintainPartitions
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-client && rm -rf /var/lib/apt/lists/*
ENV PARTFLOW_ARCHIVE_DIR=/archive
ENV PARTFLOW_WORKFLOW_BUNDLE=/app/dist/workflow-bundle.js
RUN mkdir -p /archive && chown node /archive
USER node
CMD ["node", "dist/worker/main.js"]

