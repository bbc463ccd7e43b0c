/**
 * Process configuration. Temporal connection settings come from Temporal's standard environment
 * configuration (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS*, TEMPORAL_PROFILE and
 * the temporal.toml profile file), the same the Temporal CLI reads; partflow's own from PARTFLOW_*.
 */
import { loadClientConnectConfig } from '@temporalio/envconfig';

export interface PartflowConfig {
  temporalAddress: string;
  namespace: string;
  taskQueue: string;
  /** pg connection string; when absent, pg reads the standard PG* variables */
  databaseUrl: string | undefined;
  /** TLS, API key and gRPC metadata from the environment configuration, for Connection/NativeConnection */
  connectionExtras: { tls?: unknown; apiKey?: string; metadata?: Record<string, string> };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): PartflowConfig {
  let profile: ReturnType<typeof loadClientConnectConfig> | undefined;
  try {
    profile = loadClientConnectConfig({
      overrideEnvVars: Object.fromEntries(
        Object.entries(env).filter((e): e is [string, string] => typeof e[1] === 'string'),
      ),
    });
  } catch {
    profile = undefined; // no profile file, or one we cannot read: the plain variables below still apply
  }
  const co = (profile?.connectionOptions ?? {}) as {
    address?: string;
    tls?: unknown;
    apiKey?: string;
    metadata?: Record<string, string>;
  };
  return {
    temporalAddress: env.TEMPORAL_ADDRESS || co.address || 'localhost:7233',
    namespace: env.TEMPORAL_NAMESPACE || profile?.namespace || 'default',
    taskQueue: env.PARTFLOW_TASK_QUEUE || 'partflow',
    databaseUrl: env.DATABASE_URL || undefined,
    connectionExtras: {
      ...(co.tls !== undefined ? { tls: co.tls } : {}),
      ...(co.apiKey ? { apiKey: co.apiKey } : {}),
      ...(co.metadata && Object.keys(co.metadata).length ? { metadata: co.metadata } : {}),
    },
  };
}

/** The worker's maxHeartbeatThrottleInterval (worker/worker.ts): how late at most an activity learns of a cancel. */
export const HEARTBEAT_THROTTLE_MS = 5_000;
