import { writeFile } from "node:fs/promises";

const res = await fetch(`${process.env.TMS_URL}/projects/storefront/strings?lang=de`);
if (res.status === 429) {
  console.error(`Error: 429 Too Many Requests (retry after ${res.headers.get("retry-after")}s)`);
  console.error(await res.text());
  process.exit(1);
}
if (!res.ok) throw new Error(`translation service answered ${res.status}`);
await writeFile("de.json", await res.text());
console.log("wrote de.json");
