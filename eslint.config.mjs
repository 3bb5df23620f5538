// ESLint for the cell view card (plain browser JavaScript, an ES module).
// Run: npm ci && npm run lint   (package.json pins ESLint; no build step)
import js from "@eslint/js";
import globals from "globals";

export default [
  { ignores: ["node_modules/", ".venv*/", "artifacts/", "config/"] },
  js.configs.recommended,
  {
    files: ["custom_components/active_balancer/frontend/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.browser },
    },
    rules: {
      eqeqeq: "error",
      "no-var": "error",
      "prefer-const": "error",
      "no-unused-vars": ["error", { argsIgnorePattern: "^_" }],
      "no-implicit-globals": "error",
      "no-console": "error",
      curly: ["error", "multi-line"],
    },
  },
];
