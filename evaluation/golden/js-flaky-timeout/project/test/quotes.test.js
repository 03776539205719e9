import { test } from "node:test";
import assert from "node:assert/strict";
import { latestQuote } from "../src/quotes.js";

test("latest quote has a symbol and a price", async () => {
  const quote = await latestQuote(process.env.QUOTES_URL);
  assert.equal(typeof quote.symbol, "string");
  assert.ok(quote.price > 0);
});
