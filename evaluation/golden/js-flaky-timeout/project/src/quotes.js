export async function latestQuote(base, { timeoutMs = 800 } = {}) {
  const res = await fetch(`${base}/quotes/latest`, { signal: AbortSignal.timeout(timeoutMs) });
  return res.json();
}
