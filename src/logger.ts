/**
 * The one logger. JSON lines by default, pretty when stdout is a terminal (or PARTFLOW_LOG_PRETTY=1);
 * PARTFLOW_LOG_JSON=1 forces JSON. `PARTFLOW_LOG_LEVEL` sets the level.
 */
import pino from 'pino';

export type Logger = pino.Logger;

export function createLogger(bindings: Record<string, unknown> = {}): Logger {
  const pretty =
    process.env.PARTFLOW_LOG_JSON !== '1' && (process.env.PARTFLOW_LOG_PRETTY === '1' || process.stdout.isTTY === true);
  return pino({
    level: process.env.PARTFLOW_LOG_LEVEL ?? 'info',
    base: { app: 'partflow', ...bindings },
    ...(pretty
      ? {
          transport: {
            target: 'pino-pretty',
            options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname,app' },
          },
        }
      : {}),
  });
}
