// Download the icon font from the asset registry into vendor/.
import { mkdir, writeFile } from "node:fs/promises";

const base = process.env.ASSET_REGISTRY;
const url = `${base}/fonts/icons-3.2.0.woff2`;
const res = await fetch(url);
if (!res.ok) {
  console.error(`npm ERR! code E${res.status}`);
  console.error(`npm ERR! ${res.status} ${res.statusText} - GET ${url}`);
  process.exit(1);
}
await mkdir("vendor", { recursive: true });
await writeFile("vendor/icons.woff2", Buffer.from(await res.arrayBuffer()));
console.log("fetched icons-3.2.0.woff2");
