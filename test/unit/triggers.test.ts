import { retargetTriggerDef } from '../../src/plan/triggers';

describe('retargetTriggerDef', () => {
  it("aims the definition's ON clause at the new table", () => {
    expect(
      retargetTriggerDef(
        'CREATE TRIGGER t BEFORE UPDATE OF v ON public.p FOR EACH ROW WHEN ((old.v IS DISTINCT FROM new.v)) ' +
          "EXECUTE FUNCTION public.f('a', 'b ON public.p c')",
        'public.p',
        '"public"."p"',
      ),
    ).toBe(
      'CREATE TRIGGER t BEFORE UPDATE OF v ON "public"."p" FOR EACH ROW WHEN ((old.v IS DISTINCT FROM new.v)) ' +
        "EXECUTE FUNCTION public.f('a', 'b ON public.p c')",
    );
  });

  it('skips quoted names that contain the clause', () => {
    expect(
      retargetTriggerDef(
        'CREATE TRIGGER "x ON public.p "" y" AFTER UPDATE OF "c ON public.p " ON public.p FOR EACH ROW EXECUTE FUNCTION f()',
        'public.p',
        'pg_temp.t',
      ),
    ).toBe(
      'CREATE TRIGGER "x ON public.p "" y" AFTER UPDATE OF "c ON public.p " ON pg_temp.t FOR EACH ROW EXECUTE FUNCTION f()',
    );
  });

  it('refuses a definition whose first ON clause names another table', () => {
    expect(() =>
      retargetTriggerDef(
        'CREATE TRIGGER t AFTER INSERT ON public.q FOR EACH ROW EXECUTE FUNCTION f()',
        'public.p',
        'x',
      ),
    ).toThrow(/cannot find "ON public.p"/);
  });
});
