/**
 * The custom search attributes that make partflow's runs a fleet one can query (issue 28, item 2): which table,
 * which phase, waiting for approval, throttled. Registered by our scripts (the dev server's
 * `--search-attribute`, scripts/temporal-server.sh, docker-compose) and, on a server we do not start, by the
 * commands the README gives. A run sets them only where they are registered: an unregistered one would fail
 * the workflow's task.
 */
export const FLEET_ATTRIBUTES = {
  table: { name: 'PartflowTable', type: 'Keyword' },
  phase: { name: 'PartflowPhase', type: 'Keyword' },
  awaitingApproval: { name: 'PartflowAwaitingApproval', type: 'Bool' },
  throttled: { name: 'PartflowThrottled', type: 'Bool' },
} as const;

/** `--search-attribute Name=Type` for each: the dev server's flags. */
export function devServerFlags(): string[] {
  return Object.values(FLEET_ATTRIBUTES).flatMap((a) => ['--search-attribute', `${a.name}=${a.type}`]);
}

/** The visibility query of the runs waiting for their cut-over's approval (optionally of one table). */
export function awaitingApprovalQuery(table?: string): string {
  const t = table ? ` AND ${FLEET_ATTRIBUTES.table.name} = '${table.replace(/'/g, "''")}'` : '';
  return `${FLEET_ATTRIBUTES.awaitingApproval.name} = true AND ExecutionStatus = 'Running'${t}`;
}
