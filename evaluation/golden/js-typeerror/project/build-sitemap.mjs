import { readFileSync } from "node:fs";

const pages = JSON.parse(readFileSync("pages.json", "utf8"));
for (const page of pages) {
  console.log(`${page.meta.canonical}\t${page.updated}`);
}
