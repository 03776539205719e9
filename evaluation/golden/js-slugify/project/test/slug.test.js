import { test } from "node:test";
import assert from "node:assert/strict";
import { slugify } from "../src/slug.js";

test("plain title", () => {
  assert.equal(slugify("Hello World"), "hello-world");
});

test("punctuation and accents are dropped", () => {
  assert.equal(slugify("Crème brûlée: a guide!"), "creme-brulee-a-guide");
});
