// ESLint: promises are awaited, workflow code stays deterministic (no Node built-ins, no pg, no pino),
// and the size limits of the codebase (120 columns, functions of about 80 lines) hold.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import { builtinModules } from 'node:module';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'test-artifacts/**', '**/*.js', '**/*.mjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-non-null-assertion': 'off',
    },
  },
  {
    files: ['src/**/*.ts', 'activities/**/*.ts', 'workflows/**/*.ts', 'worker/**/*.ts'],
    rules: {
      'max-len': ['error', { code: 120, ignoreUrls: true }],
      'max-lines-per-function': ['error', { max: 80, skipBlankLines: true, skipComments: true }],
    },
  },
  {
    // tests load some modules lazily with require() (after the environment is set up)
    files: ['test/**/*.ts'],
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    files: ['workflows/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [
            ...nodeBuiltins.map((name) => ({
              name,
              message: 'Workflow code is deterministic: I/O lives in activities.',
            })),
            { name: 'pg', message: 'Workflow code does not touch the database: use an activity.' },
            { name: 'pino', message: 'Workflow code logs with the workflow logger (@temporalio/workflow log).' },
          ],
          patterns: [
            {
              group: ['../activities/*', '!../activities'],
              allowTypeImports: true,
              message: 'Activities are imported as types only.',
            },
          ],
        },
      ],
    },
  },
);
