-- the standbys a partitionTable run has seen streaming (application_name@client_addr): one that vanishes
-- holds the copy until it is back (replica-aware throttling fails closed)
ALTER TABLE partflow.runs ADD COLUMN standbys text[];
