/** Process configuration from the environment, as documented in CONTRACT.md and the README. */
export interface PartflowConfig {
  temporalAddress: string;
  namespace: string;
  taskQueue: string;
  /** pg connection string; when absent, pg reads the standard PG* variables */
  databaseUrl: string | undefined;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): PartflowConfig {
  return {
    temporalAddress: env.TEMPORAL_ADDRESS || 'localhost:7233',
    namespace: env.TEMPORAL_NAMESPACE || 'default',
    taskQueue: env.PARTFLOW_TASK_QUEUE || 'partflow',
    databaseUrl: env.DATABASE_URL || undefined,
  };
}
