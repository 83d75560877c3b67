// Test client for credbroker's SDK compatibility matrix (tests/e2e/test_compat.py):
// the AWS SDK for JavaScript v3 on Node, unmodified, pinned by package-lock.json.
//
//   node probe.mjs get SOURCE              one credential fetch, then STS GetCallerIdentity
//                                          (env STS_ENDPOINT) when set
//   node probe.mjs rotate SOURCE FILE WRONG  fetch with AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE,
//                                          write WRONG into FILE, fetch again with the same
//                                          provider, restore the file, fetch a third time
//   node probe.mjs region                  the region an STSClient resolves with no
//                                          AWS_REGION (falls through to IMDS placement/region)
//   node probe.mjs loop SOURCE SECONDS     GetCallerIdentity once per second through one
//                                          STSClient (the SDK's own identity caching)
//
// SOURCE: imds = fromInstanceMetadata, container = fromContainerMetadata,
//         http = fromHttp, chain = fromNodeProviderChain (the default Node chain).
// Prints one JSON line; exits non-zero on failure.

import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";

import { GetCallerIdentityCommand, STSClient } from "@aws-sdk/client-sts";
import {
  fromContainerMetadata,
  fromHttp,
  fromInstanceMetadata,
  fromNodeProviderChain,
} from "@aws-sdk/credential-providers";

const require = createRequire(import.meta.url);
const version = (pkg) => {
  try {
    return require(`${pkg}/package.json`).version;
  } catch {
    return "?";
  }
};
// The packages that implement what is tested (resolved from this directory's node_modules).
const VERSION = [
  `@aws-sdk/client-sts ${version("@aws-sdk/client-sts")}`,
  `@aws-sdk/credential-providers ${version("@aws-sdk/credential-providers")}`,
  `@aws-sdk/credential-provider-node ${version("@aws-sdk/credential-provider-node")}`,
  `@aws-sdk/credential-provider-http ${version("@aws-sdk/credential-provider-http")}`,
  `@smithy/credential-provider-imds ${version("@smithy/credential-provider-imds")}`,
  `node ${process.versions.node}`,
].join(", ");

function emit(fields) {
  console.log(JSON.stringify({ sdk: "js", version: VERSION, ...fields }));
}

function provider(source) {
  switch (source) {
    case "imds":
      return fromInstanceMetadata();
    case "container":
      return fromContainerMetadata();
    case "http":
      return fromHttp();
    case "chain":
      return fromNodeProviderChain();
    default:
      throw new Error(`unknown source ${source}`);
  }
}

function stsClient(credentials) {
  const endpoint = process.env.STS_ENDPOINT;
  if (!endpoint) return null;
  return new STSClient({ region: "us-east-1", endpoint, credentials, maxAttempts: 1 });
}

const iso = (d) => (d instanceof Date ? d.toISOString().replace(/\.\d{3}Z$/, "Z") : null);
const describe = (e) => `${e?.name ?? "Error"}: ${e?.message ?? e}`;

async function get(source) {
  const creds = await provider(source)();
  const out = {
    mode: "get",
    ok: true,
    source,
    provider_features: creds.$source ? Object.keys(creds.$source) : undefined,
    access_key_id: creds.accessKeyId,
    has_secret: Boolean(creds.secretAccessKey),
    has_token: Boolean(creds.sessionToken),
    expiration: iso(creds.expiration),
    account_id: creds.accountId ?? null,
  };
  const sts = stsClient(creds);
  if (sts) out.arn = (await sts.send(new GetCallerIdentityCommand({}))).Arn;
  emit(out);
}

async function rotate(source, path, wrong) {
  const right = readFileSync(path, "utf8");
  const fetch = provider(source); // one provider, called three times
  const attempt = async () => {
    try {
      const c = await fetch();
      return { ok: true, access_key_id: c.accessKeyId };
    } catch (e) {
      return { ok: false, error: describe(e) };
    }
  };
  const fetches = [await attempt()];
  try {
    writeFileSync(path, wrong);
    fetches.push(await attempt());
  } finally {
    writeFileSync(path, right);
  }
  fetches.push(await attempt());
  emit({ mode: "rotate", ok: true, source, fetches });
}

async function region() {
  const client = new STSClient({});
  emit({ mode: "region", ok: true, region: await client.config.region() });
}

async function loop(source, seconds) {
  const sts = stsClient(provider(source));
  if (!sts) throw new Error("STS_ENDPOINT is not set");
  let calls = 0;
  let failures = 0;
  const keys = [];
  const arns = new Set();
  const errors = [];
  const deadline = Date.now() + seconds * 1000;
  while (Date.now() < deadline) {
    const tick = Date.now();
    calls += 1;
    try {
      // The memoized identity the signer is about to use (no extra fetch unless it is
      // within the SDK's refresh window).
      const c = await sts.config.credentials();
      if (!keys.includes(c.accessKeyId)) keys.push(c.accessKeyId);
      arns.add((await sts.send(new GetCallerIdentityCommand({}))).Arn);
    } catch (e) {
      failures += 1;
      if (errors.length < 5) errors.push(`${new Date().toISOString()} ${describe(e)}`);
    }
    await new Promise((r) => setTimeout(r, Math.max(0, 1000 - (Date.now() - tick))));
  }
  emit({
    mode: "loop",
    ok: failures === 0,
    source,
    calls,
    failures,
    distinct_keys: keys.length,
    keys,
    arns: [...arns].sort(),
    errors,
  });
  if (failures) process.exitCode = 1;
}

const [mode, ...args] = process.argv.slice(2);
try {
  if (mode === "get" && args.length === 1) await get(args[0]);
  else if (mode === "rotate" && args.length === 3) await rotate(...args);
  else if (mode === "region" && args.length === 0) await region();
  else if (mode === "loop" && args.length === 2) await loop(args[0], Number(args[1]));
  else {
    console.error("usage: probe.mjs get SOURCE | rotate SOURCE FILE WRONG | region | loop SOURCE SECONDS");
    process.exit(2);
  }
} catch (e) {
  console.error(e?.stack ?? e);
  emit({ mode, ok: false, error: describe(e) });
  process.exitCode = 1;
}
