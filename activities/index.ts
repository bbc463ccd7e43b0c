/** Every activity partflow registers, built around one pg pool and logger. */
import { createCleanupActivities } from './cleanup';
import { fleetRegistered } from './fleet';
import { createConstraintActivities } from './constraints';
import { createIndexActivities } from './indexes';
import { createMaintenanceActivities } from './maintenance';
import { createPartitionActivities, Deps } from './partition';

export function createActivities(deps: Deps) {
  return {
    ...createPartitionActivities(deps),
    ...createConstraintActivities(deps),
    ...createMaintenanceActivities(deps),
    ...createCleanupActivities(deps),
    ...createIndexActivities(deps),
    fleetRegistered,
  };
}

export type Activities = ReturnType<typeof createActivities>;
export type { Deps } from './partition';
export type {
  BackfillChunkArgs,
  BackfillChunkInput,
  BackfillChunkResult,
  CutoverResult,
  LastCheck,
  PreflightResult,
  VerifyReport,
} from './partition';
