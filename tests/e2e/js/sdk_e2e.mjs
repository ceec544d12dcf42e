// @ts-check
/**
 * The official openai npm package, driven as a user would, against the API at IMAGEGEN_BASE_URL (".../v1": the
 * local stack, or a deployment), with IMAGEGEN_API_KEY as its key. One process for every call.
 *
 * Every response is checked against the SDK's own declared types (sdk_types.mjs) after this file has been
 * type-checked against them (the same compilation as `tsc -p .`). Prints one JSON report on stdout:
 *   { sdk, node, typecheck: [diagnostics], checks: [{ name, errors, ... }], images: [{ check, source, size, base64 }],
 *     inputs: { name: base64 } }
 * `inputs` are the PNGs this script uploads for edits and variations (drawn here, so it needs no files).
 * tests/e2e/test_node_sdk_e2e.py runs it and decodes every image with Pillow (an independent decoder).
 * Exits 1 when the type check or any check found an error, 2 when it could not run at all.
 */
import { crc32, deflateSync } from 'node:zlib';

import OpenAI, { toFile } from 'openai';
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
 * An 8-bit RGBA PNG (colour type 6, no interlace, filter 0 on every row).
 * @param {number} width
 * @param {number} height
 * @param {(x: number, y: number) => [number, number, number, number]} pixel
 */
function encodePng(width, height, pixel) {
  const rows = Buffer.alloc(height * (1 + 4 * width));
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) rows.set(pixel(x, y), y * (1 + 4 * width) + 1 + 4 * x);
  }
  /** @param {string} type @param {Buffer} data */
  const chunk = (type, data) => {
    const typed = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(typed));
    return Buffer.concat([length, typed, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header.set([8, 6, 0, 0, 0], 8);
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk('IHDR', header), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

// Not square, so a swapped width and height shows; every pixel of `a` differs from its neighbours and the top rows
// are half transparent, so an edit that moves, misses or repaints pixels, or drops alpha, shows in the output.
const WIDTH = 64;
const HEIGHT = 48;
const INPUT_SIZE = `${WIDTH}x${HEIGHT}`;
const INPUTS = {
  a: encodePng(WIDTH, HEIGHT, (x, y) => [(x * 4 + 17) % 256, (y * 5 + 3) % 256, (x * y) % 256, y < 4 ? 128 : 255]),
  b: encodePng(WIDTH, HEIGHT, (x, y) => [255 - x * 3, y * 2, 99, 255]),
  // transparent (the edit area) on the left half
  mask: encodePng(WIDTH, HEIGHT, (x) => [0, 0, 0, x < WIDTH / 2 ? 0 : 255]),
  mask_taller: encodePng(WIDTH, HEIGHT + 1, (x) => [0, 0, 0, x < WIDTH / 2 ? 0 : 255]),
};

/** @param {keyof typeof INPUTS} name */
function upload(name) {
  return toFile(INPUTS[name], `${name}.png`, { type: 'image/png' });
}

/**
 * Hand back every image of an answer: b64_json as it came, a URL fetched (a presigned S3 GET).
 * @param {Context} context
 * @param {string} check
 * @param {OpenAI.ImagesResponse} response
 * @param {'url' | 'b64_json' | undefined} format what was asked for (undefined: the API's default)
 */
async function handBack(context, check, response, format) {
  for (const [index, image] of (response.data ?? []).entries()) {
    if (format === 'url') expect(context, image.b64_json === undefined, `data[${index}] has b64_json in a url answer`);
    if (format === 'b64_json') expect(context, image.url === undefined, `data[${index}] has a url in a b64_json answer`);
    if (typeof image.b64_json === 'string') {
      context.images.push({ check, source: 'b64_json', size: INPUT_SIZE, base64: image.b64_json });
    } else if (typeof image.url === 'string') {
      const fetched = await fetch(image.url);
      expect(context, fetched.status === 200, `GET data[${index}].url answered ${fetched.status}`);
      context.images.push({ check, source: 'url', size: INPUT_SIZE, base64: Buffer.from(await fetched.arrayBuffer()).toString('base64') });
    } else {
      context.errors.push(`data[${index}] has neither a url nor b64_json`);
    }
  }
}

/**
 * An edit as the SDK sends it, multipart: two images (image[]) and a mask; one image answered.
 * @param {Context} context
 * @param {'url' | 'b64_json'} format
 */
async function editMultipart(context, format) {
  const image = [await upload('a'), await upload('b')];
  const response = await client.images.edit({ model: 'local', image, mask: await upload('mask'), prompt: 'invert the left half', response_format: format });
  conforms(context, response, 'OpenAI.ImagesResponse');
  expect(context, (response.data ?? []).length === 1, `n omitted answered ${(response.data ?? []).length} images`);
  await handBack(context, `edit_multipart_${format}`, response, format);
}

/**
 * An edit in JSON, the image by reference (a data: URL): the SDK's generic post, as for any route it has no method for.
 * @param {Context} context
 */
async function editJson(context) {
  const body = {
    model: 'local',
    prompt: 'invert it all',
    images: [{ image_url: `data:image/png;base64,${INPUTS.a.toString('base64')}` }],
    response_format: 'b64_json',
  };
  const response = /** @type {OpenAI.ImagesResponse} */ (await client.post('/images/edits', { body }));
  conforms(context, response, 'OpenAI.ImagesResponse');
  expect(context, (response.data ?? []).length === 1, `n omitted answered ${(response.data ?? []).length} images`);
  await handBack(context, 'edit_json', response, 'b64_json');
}

/**
 * Two variations of one image, in the API's default response format.
 * @param {Context} context
 */
async function variation(context) {
  const response = await client.images.createVariation({ model: 'local', image: await upload('a'), n: 2 });
  conforms(context, response, 'OpenAI.ImagesResponse');
  expect(context, (response.data ?? []).length === 2, `n=2 answered ${(response.data ?? []).length} images`);
  await handBack(context, 'variation', response, undefined);
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
  ['edit_multipart_b64_json', (context) => editMultipart(context, 'b64_json')],
  ['edit_multipart_url', (context) => editMultipart(context, 'url')],
  ['edit_json', editJson],
  ['variation', variation],
  [
    'error_mask_size',
    (context) =>
      refused(
        context,
        async () => client.images.edit({ model: 'local', image: await upload('a'), mask: await upload('mask_taller'), prompt: 'x' }),
        OpenAI.BadRequestError,
        400,
        'mask',
      ),
  ],
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

const inputs = Object.fromEntries(Object.entries(INPUTS).map(([name, data]) => [name, data.toString('base64')]));
process.stdout.write(`${JSON.stringify({ sdk: VERSION, node: process.version, typecheck: types.diagnostics, checks, images, inputs })}\n`);
process.exitCode = types.diagnostics.length > 0 || checks.some((check) => check.errors.length > 0) ? 1 : 0;
