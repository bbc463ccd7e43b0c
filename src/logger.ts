/** The one logger. JSON lines by default; `PARTFLOW_LOG_LEVEL` sets the level. */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(bindings: Record<string, unknown> = {}): Logger {
  return pino({ level: process.env.PARTFLOW_LOG_LEVEL ?? 'info', base: { app: 'partflow', ...bindings } });
}
