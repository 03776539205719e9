import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";

test("icon font is vendored", () => {
  assert.ok(existsSync("vendor/icons.woff2"));
});
