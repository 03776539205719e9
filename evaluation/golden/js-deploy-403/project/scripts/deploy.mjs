const res = await fetch(`${process.env.DEPLOY_API}/environments/production/deployments`, {
  method: "POST", body: JSON.stringify({ ref: process.env.METABUILDER_COMMIT ?? "HEAD" }),
});
if (!res.ok) {
  console.error(`deploy failed: ${res.status} ${res.statusText}`);
  console.error(await res.text());
  process.exit(1);
}
console.log("deployment created");
