/**
 * Whether the fleet's search attributes (src/fleet.ts) are registered in the run's namespace: asked once at
 * the start of a run, so the workflow sets them only where the server knows them. Any error answers false
 * (the run goes on without them; the Web UI's filters then do not list it).
 */
import { Context } from '@temporalio/activity';
import { FLEET_ATTRIBUTES } from '../src/fleet';

export async function fleetRegistered(): Promise<boolean> {
  try {
    const ctx = Context.current();
    const r = await ctx.client.connection.operatorService.listSearchAttributes({
      namespace: ctx.info.workflowNamespace,
    });
    const known = { ...(r.customAttributes ?? {}), ...(r.systemAttributes ?? {}) };
    return Object.values(FLEET_ATTRIBUTES).every((a) => a.name in known);
  } catch {
    return false;
  }
}
