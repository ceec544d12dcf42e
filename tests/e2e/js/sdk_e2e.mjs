// @ts-check
/**
 * The official openai npm package, driven as a user would, against the API at IMAGEGEN_BASE_URL (".../v1": the
 * local stack, or a deployment), with IMAGEGEN_API_KEY as its key. One process for every call.
 *
 * Every response is checked against the SDK's own declared types (sdk_types.mjs) after this file has been
 * type-checked against them (the same compilation as `tsc -p .`). Prints one JSON report on stdout:
 *   { sdk, node, typecheck: [diagnostics], checks: [{ name, errors, ... }], images: [{ check, source, size, base64 }] }
 * tests/e2e/test_node_sdk_e2e.py runs it and decodes every image with Pillow (an independent decoder).
 * Exits 1 when the type check or any check found an error, 2 when it could not run at all.
 */
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

import { SdkTypes } from './sdk_types.mjs';

/** @typedef {{ check: string, source: 'url' | 'b64_json', size: string, base64: string }} ImageOut */
/** @typedef {{ name: string, errors: string[], extras?: string[], [detail: string]: unknown }} CheckOut */
/** @typedef {{ errors: string[], extras: string[], images: ImageOut[], details: Record<string, unknown> }} Context */

const baseURL = process.env.IMAGEGEN_BASE_URL;
if (!baseURL) {
  process.stderr.write('IMAGEGEN_BASE_URL (the API base, ending in /v1) is required\n');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey: process.env.IMAGEGEN_API_KEY ?? 'unused-locally', maxRetries: 0, timeout: 60_000 });
const types = new SdkTypes();

/**
 * @param {Context} context
 * @param {unknown} value
 * @param {string} type e.g. 'OpenAI.ImagesResponse'
 * @param {'forbid' | 'allow'} [extra]
 */
function conforms(context, value, type, extra = 'forbid') {
  const verdict = types.validate(value, type, { extra });
  context.errors.push(...verdict.errors);
  context.extras.push(...verdict.extras);
}

/**
 * @param {Context} context
 * @param {boolean} condition
 * @param {string} message
 */
function expect(context, condition, message) {
  if (!condition) context.errors.push(message);
}

/**
 * A generation answered with URLs: each URL is fetched (a presigned S3 GET) and its bytes handed back.
 * @param {Context} context
 */
async function generateUrl(context) {
  const size = '512x512';
  const response = await client.images.generate({ model: 'local', prompt: 'a lighthouse at dawn', size, n: 2, response_format: 'url' });
  conforms(context, response, 'OpenAI.ImagesResponse');
  const data = response.data ?? [];
  expect(context, data.length === 2, `n=2 answered ${data.length} images`);
  for (const [index, image] of data.entries()) {
    expect(context, image.b64_json === undefined, `data[${index}] has b64_json in a url answer`);
    if (typeof image.url !== 'string') continue; // reported by conforms, or missing
    const fetched = await fetch(image.url);
    expect(context, fetched.status === 200, `GET data[${index}].url answered ${fetched.status}`);
    const base64 = Buffer.from(await fetched.arrayBuffer()).toString('base64');
    context.images.push({ check: 'generate_url', source: 'url', size, base64 });
  }
}

/**
 * A generation answered in base64.
 * @param {Context} context
 */
async function generateB64(context) {
  const size = '256x256';
  const response = await client.images.generate({ model: 'local', prompt: 'a red fox', size, response_format: 'b64_json' });
  conforms(context, response, 'OpenAI.ImagesResponse');
  const data = response.data ?? [];
  expect(context, data.length === 1, `n omitted answered ${data.length} images`);
  for (const [index, image] of data.entries()) {
    expect(context, image.url === undefined, `data[${index}] has a url in a b64_json answer`);
    if (typeof image.b64_json === 'string') context.images.push({ check: 'generate_b64', source: 'b64_json', size, base64: image.b64_json });
  }
}

/**
 * `models.list()`: the page and every model against the SDK's Model (the capabilities this API adds are extras).
 * @param {Context} context
 */
async function modelsList(context) {
  const page = await client.models.list();
  const ids = [];
  for await (const model of page) {
    conforms(context, model, 'OpenAI.Models.Model', 'allow');
    ids.push(model.id);
  }
  expect(context, ids.includes('local'), `models.list() lacks 'local': ${JSON.stringify(ids)}`);
  context.details.ids = ids;
}

/**
 * An invalid request surfaces as the SDK's error class for its status, with the OpenAI error fields set.
 * @param {Context} context
 * @param {() => Promise<unknown>} call
 * @param {typeof OpenAI.BadRequestError | typeof OpenAI.NotFoundError} errorClass the SDK's class for the status
 * @param {number} status
 * @param {string} param
 */
async function refused(context, call, errorClass, status, param) {
  try {
    await call();
  } catch (error) {
    if (!(error instanceof errorClass)) {
      context.errors.push(`expected ${errorClass.name}, got ${error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error)}`);
      return;
    }
    expect(context, error.status === status, `status ${error.status}, expected ${status}`);
    expect(context, error.param === param, `error.param is ${JSON.stringify(error.param)}, expected ${JSON.stringify(param)}`);
    expect(context, error.type === 'invalid_request_error', `error.type is ${JSON.stringify(error.type)}`);
    expect(context, typeof error.message === 'string' && error.message.length > 0, 'no error message');
    context.details.param = error.param;
    context.details.code = error.code;
    context.details.message = error.message;
    return;
  }
  context.errors.push(`the call succeeded; expected ${errorClass.name}`);
}

/** @type {[string, (context: Context) => Promise<void>][]} */
const CHECKS = [
  ['generate_url', generateUrl],
  ['generate_b64', generateB64],
  ['models_list', modelsList],
  [
    'error_bad_size',
    (context) => refused(context, () => client.images.generate({ model: 'local', prompt: 'a red fox', size: '640x480' }), OpenAI.BadRequestError, 400, 'size'),
  ],
  [
    'error_unknown_model',
    (context) => refused(context, () => client.images.generate({ model: 'no-such-model', prompt: 'a red fox' }), OpenAI.NotFoundError, 404, 'model'),
  ],
  // Edits and variations (issue #13 items 3 and 5) are not served yet. When they are, add their checks here, each
  // validated with conforms(context, response, 'OpenAI.ImagesResponse') and its images handed back like generateUrl's:
  //   ['edit_multipart', ...]  client.images.edit({ model: 'local', image: [await toFile(...), await toFile(...)], mask, prompt })
  //   ['edit_json', ...]       client.images.edit({ model: 'local', images: [{ image_url: 'data:image/png;base64,...' }], prompt })
  //   ['variation', ...]       client.images.createVariation({ model: 'local', image: await toFile(...) })
  // and add their names to EXPECTED_CHECKS in tests/e2e/test_node_sdk_e2e.py.
];

/** @type {CheckOut[]} */
const checks = [];
/** @type {ImageOut[]} */
const images = [];
for (const [name, run] of CHECKS) {
  /** @type {Context} */
  const context = { errors: [], extras: [], images: [], details: {} };
  try {
    await run(context);
  } catch (error) {
    context.errors.push(`threw ${error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error)}`);
  }
  checks.push({ name, errors: context.errors, extras: context.extras, ...context.details });
  images.push(...context.images);
}

process.stdout.write(`${JSON.stringify({ sdk: VERSION, node: process.version, typecheck: types.diagnostics, checks, images })}\n`);
process.exitCode = types.diagnostics.length > 0 || checks.some((check) => check.errors.length > 0) ? 1 : 0;
