#!/usr/bin/env node
// Generate images through opi_openai from Node.js, with koffi (a C FFI for Node).
//
//   cargo build --release
//   cd examples/node && npm install
//   OPENAI_TOKEN=sk-... node get_images.mjs https://api.openai.com/ [MODEL [DESCRIPTION [HEADERS]]]
//
// URL: the server's base URL (required; nothing is started). MODEL defaults to gpt-image-1.5;
// DESCRIPTION to {"prompt":"Yellow alpaca","n":1,"size":"1024x1024"} (JSON text, OPI's
// single-quoted JSON, or a .json file path); HEADERS: extra headers as a JSON object.
// The token comes from OPENAI_TOKEN (not argv, so it stays out of the process list).
// The library: OPI_LIB, else target/release/ of this repository.
//
// Prints the result JSON on stdout; exit status 0, or 1 when it has an "error" key.

import koffi from 'koffi';
import path from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

function libraryPath() {
  if (process.env.OPI_LIB) return process.env.OPI_LIB;
  const release = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'target', 'release');
  const name = { win32: 'opi_openai.dll', darwin: 'libopi_openai.dylib' }[process.platform] ?? 'libopi_openai.so';
  return path.join(release, name);
}

const lib = koffi.load(libraryPath());
// The result is declared `void *`, not `char *`/`str`: koffi would copy a string result into a
// JS string and drop the pointer, and the string could never be freed.
const opiGetImages = lib.func(
  'void *opi_openai_get_images(const char *url, const char *token, const char *model, const char *descr_json, const char *headers_json)');
const opiFreeString = lib.func('void opi_free_string(void *s)');
const opiVersion = lib.func('const char *opi_version(void)'); // static: never freed

/** OPI's GetImages: the result JSON text. null/undefined arguments are passed as NULL. */
export function getImages(url, token, model, descr, headers) {
  const ptr = opiGetImages(url, token ?? null, model ?? null, descr, headers ?? null);
  try {
    return koffi.decode(ptr, 'char', -1); // NUL-terminated UTF-8 -> JS string
  } finally {
    opiFreeString(ptr); // exactly once
  }
}

const [url, model = 'gpt-image-1.5', descr = '{"prompt":"Yellow alpaca","n":1,"size":"1024x1024"}', headers] =
  process.argv.slice(2);
if (!url || url === '-h' || url === '--help') {
  console.error(`opi_openai ${opiVersion()}\nusage: node get_images.mjs URL [MODEL [DESCRIPTION [HEADERS]]]   (token from OPENAI_TOKEN)`);
  process.exit(2);
}
const result = getImages(url, process.env.OPENAI_TOKEN, model, descr, headers);
console.log(result);
process.exit('error' in JSON.parse(result) ? 1 : 0);
