import { test } from "node:test";
import assert from "node:assert/strict";
import { total } from "../src/cart.js";

test("total skips empty lines", () => {
  assert.equal(total([{ qty: 2, price: 3 }, { qty: 0, price: 9 }]), 6);
});
