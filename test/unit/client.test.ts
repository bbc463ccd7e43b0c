import { partitionSummary } from '../../operator/client';

describe("the Web UI's summary of a run our CLI starts (issue 28, item 1)", () => {
  it('names the table, the change and the key input', () => {
    expect(partitionSummary({ table: 'generated_images', method: 'attach', cutoffMonth: '2027-03' })).toEqual({
      staticSummary: 'partitionTable public.generated_images: monthly partitions by created_at, attach (the rows stay)',
      staticDetails:
        '**column**: created_at\n**method**: attach\n**cutoffMonth**: 2027-03\n**approval**: signal\n**rollbackWindow**: 24h',
    });
    expect(partitionSummary({ table: 'app.credit_transactions', approval: 'auto', parallelism: 2 }).staticSummary).toBe(
      'partitionTable app.credit_transactions: monthly partitions by created_at, copy',
    );
  });
});
