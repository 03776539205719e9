// House lint rules (eslint's stylish output): no `var`, no `==`. --fix rewrites in place.
import { readFileSync, writeFileSync, readdirSync } from "node:fs";

const fix = process.argv.includes("--fix");
let problems = 0;
for (const name of readdirSync("src").filter((f) => f.endsWith(".js"))) {
  const path = `src/${name}`;
  let text = readFileSync(path, "utf8");
  const report = [];
  text.split("\n").forEach((line, i) => {
    const v = line.indexOf("var ");
    if (v >= 0) report.push(`  ${i + 1}:${v + 1}  error  Unexpected var, use let or const instead  no-var`);
    const eq = line.search(/[^=!]==[^=]/);
    if (eq >= 0) report.push(`  ${i + 1}:${eq + 2}  error  Expected '===' and instead saw '=='  eqeqeq`);
  });
  if (fix) {
    text = text.replace(/\bvar /g, "let ").replace(/([^=!])==([^=])/g, "$1===$2");
    writeFileSync(path, text);
  } else if (report.length) {
    console.log(`\n/workspace/${path}\n${report.join("\n")}`);
    problems += report.length;
  }
}
if (problems) {
  console.log(`\n\u2716 ${problems} problems (${problems} errors, 0 warnings)`);
  process.exit(1);
}
