/**
 * Routes the Temporal SDK's and Core's logs into our pino logger and turns on the SDK's Prometheus
 * exporter, which also serves partflow's own metrics (created through the activities' metric meter).
 */
import type { LogLevel, LogMetadata, Logger as SdkLogger } from '@temporalio/common';
import { makeTelemetryFilterString, Runtime } from '@temporalio/worker';
import type { Logger } from '../src/logger';

class PinoSdkLogger implements SdkLogger {
  constructor(private readonly pino: Logger) {}
  log_(level: LogLevel, message: string, meta?: LogMetadata): void {
    const fields = { ...(meta ?? {}) } as Record<string, unknown>;
    const logger = this.pino;
    switch (level) {
      case 'TRACE':
        return logger.trace(fields, message);
      case 'DEBUG':
        return logger.debug(fields, message);
      case 'WARN':
        return logger.warn(fields, message);
      case 'ERROR':
        return logger.error(fields, message);
      default:
        return logger.info(fields, message);
    }
  }
  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    this.log_(level, message, meta);
  }
  trace(message: string, meta?: LogMetadata): void {
    this.log_('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log_('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log_('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log_('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log_('ERROR', message, meta);
  }
}

/** The address the Prometheus exporter listens on; PARTFLOW_METRICS_ADDRESS, default 0.0.0.0:9464. */
export function metricsAddress(env: NodeJS.ProcessEnv = process.env): string {
  return env.PARTFLOW_METRICS_ADDRESS || '0.0.0.0:9464';
}

/**
 * The SDK's runtime with the exporter on metricsAddress(). A second worker on the same host finds the address
 * taken: the error says which address and what to set, instead of Core's bare "Address already in use".
 */
export function installRuntime(log: Logger, env: NodeJS.ProcessEnv = process.env): void {
  const address = metricsAddress(env);
  try {
    Runtime.install({
      logger: new PinoSdkLogger(log.child({ source: 'temporal-sdk' })),
      shutdownSignals: ['SIGINT', 'SIGTERM'],
      telemetryOptions: {
        logging: { forward: {}, filter: makeTelemetryFilterString({ core: 'WARN', other: 'WARN' }) },
        metrics: { prometheus: { bindAddress: address } },
      },
    });
  } catch (err) {
    const message = (err as Error).message ?? String(err);
    if (!/prometheus|address/i.test(message)) throw err;
    throw new Error(
      `the metrics exporter cannot listen on ${address} (${message}): another process, perhaps another partflow ` +
        'worker on this host, has it. Give this worker its own address with PARTFLOW_METRICS_ADDRESS, ' +
        'e.g. PARTFLOW_METRICS_ADDRESS=0.0.0.0:9465 npm run worker.',
      { cause: err },
    );
  }
}
