// @ts-check
/**
 * The official openai npm package reading `stream: true` answers, as a user would, from the API at
 * IMAGEGEN_BASE_URL (".../v1": the local stack under its streaming runtime), with IMAGEGEN_API_KEY as its key;
 * IMAGEGEN_OPENAI_MODEL is a model of the stack served by the fake OpenAI server (whose prompt `fail:mid-stream`
 * streams one partial, then an `error` event).
 *
 * `for await (const event of await client.images.generate({ ..., stream: true }))`: every event is checked against
 * the SDK's own declared event types (sdk_types.mjs; this file is type-checked in the same compilation, as
 * `tsc -p .`). The edit uploads the image the generation streamed, so it needs no files. Prints one JSON report:
 *   { sdk, node, typecheck: [diagnostics], checks: [{ name, errors, extras, events?: [{ type, size, b64_json,
 *     partial_image_index?, url? }], input?, status?, param?, request_id?, error?: { name, message, status, type,
 *     code, param } }] }
 * tests/e2e/test_streaming_e2e.py runs it and decodes every image with Pillow.
 * Exits 1 when the type check or any check found an error, 2 when it could not run at all.
 */
import OpenAI, { toFile } from 'openai';
import { VERSION } from 'openai/version';

import { SdkTypes } from './sdk_types.mjs';

/** @typedef {{ type: string, size: string, b64_json: string, partial_image_index?: number, url?: unknown }} EventOut */
/** @typedef {{ errors: string[], extras: string[], details: Record<string, unknown> }} Context */

const baseURL = process.env.IMAGEGEN_BASE_URL;
if (!baseURL) {
  process.stderr.write('IMAGEGEN_BASE_URL (the API base, ending in /v1) is required\n');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey: process.env.IMAGEGEN_API_KEY ?? 'unused-locally', maxRetries: 0, timeout: 60_000 });
const types = new SdkTypes();
const SIZE = '256x256';
const OPENAI_MODEL = process.env.IMAGEGEN_OPENAI_MODEL ?? 'gpt-image-1.5';
// The generation's completed image, uploaded by the edit.
/** @type {Buffer | undefined} */
let generated;

/** The SDK's declared type of each event, by its `type`. */
const EVENT_TYPES = /** @type {Record<string, string>} */ ({
  'image_generation.partial_image': 'OpenAI.Images.ImageGenPartialImageEvent',
  'image_generation.completed': 'OpenAI.Images.ImageGenCompletedEvent',
  'image_edit.partial_image': 'OpenAI.Images.ImageEditPartialImageEvent',
  'image_edit.completed': 'OpenAI.Images.ImageEditCompletedEvent',
});

/**
 * @param {Context} context
 * @param {boolean} condition
 * @param {string} message
 */
function expect(context, condition, message) {
  if (!condition) context.errors.push(message);
}

/**
 * An event checked against its SDK type (fields beyond it, such as this API's `url`, are extras), as reported;
 * undefined for a type the SDK does not declare.
 * @param {Context} context
 * @param {OpenAI.Images.ImageGenStreamEvent | OpenAI.Images.ImageEditStreamEvent} event
 * @returns {EventOut | undefined}
 */
function checked(context, event) {
  const declared = EVENT_TYPES[event.type];
  if (declared === undefined) {
    context.errors.push(`an event of type ${JSON.stringify(event.type)}, which the SDK does not declare`);
    return undefined;
  }
  const verdict = types.validate(event, declared, { extra: 'allow' });
  context.errors.push(...verdict.errors);
  context.extras.push(...verdict.extras);
  /** @type {EventOut} */
  const out = { type: event.type, size: event.size, b64_json: event.b64_json };
  if ('partial_image_index' in event) out.partial_image_index = event.partial_image_index;
  if ('url' in event) out.url = event.url;
  return out;
}

/**
 * Each event of a stream checked against its SDK type (fields beyond it, such as this API's `url`, are extras),
 * then reported; the types in order must be `expected`.
 * @param {Context} context
 * @param {AsyncIterable<OpenAI.Images.ImageGenStreamEvent | OpenAI.Images.ImageEditStreamEvent>} stream
 * @param {string[]} expected
 */
async function collect(context, stream, expected) {
  /** @type {EventOut[]} */
  const events = [];
  for await (const event of stream) {
    const out = checked(context, event);
    if (out !== undefined) events.push(out);
  }
  const seen = events.map((event) => event.type);
  expect(context, JSON.stringify(seen) === JSON.stringify(expected), `event types ${JSON.stringify(seen)}, expected ${JSON.stringify(expected)}`);
  context.details.events = events;
  context.extras = [...new Set(context.extras)];
  return events;
}

/**
 * A generation streaming two partials, then its image; the answer is a server-sent event stream.
 * @param {Context} context
 */
async function generateStream(context) {
  const { data: stream, response } = await client.images
    .generate({ model: 'local', prompt: 'a lighthouse at dawn', size: SIZE, stream: true, partial_images: 2 })
    .withResponse();
  const contentType = response.headers.get('content-type') ?? '';
  expect(context, contentType.startsWith('text/event-stream'), `content-type ${contentType}`);
  context.details.request_id = response.headers.get('x-amzn-requestid');
  const events = await collect(context, stream, ['image_generation.partial_image', 'image_generation.partial_image', 'image_generation.completed']);
  const completed = events.at(-1);
  if (completed?.type === 'image_generation.completed') generated = Buffer.from(completed.b64_json, 'base64');
  expect(context, typeof completed?.url === 'string', 'the completed event has no url');
}

/**
 * An edit of the generated image, streamed: multipart, as the SDK sends it.
 * @param {Context} context
 */
async function editStream(context) {
  if (generated === undefined) {
    context.errors.push('no generated image to upload');
    return;
  }
  const image = await toFile(generated, 'in.png', { type: 'image/png' });
  const stream = await client.images.edit({ model: 'local', image, prompt: 'invert it all', stream: true, partial_images: 1 });
  await collect(context, stream, ['image_edit.partial_image', 'image_edit.completed']);
  context.details.input = generated.toString('base64');
}

/**
 * A bad size is refused before any stream: the call itself throws the SDK's BadRequestError.
 * @param {Context} context
 */
async function errorStreamBadSize(context) {
  try {
    const stream = await client.images.generate({ model: 'local', prompt: 'a red fox', size: '640x480', stream: true, partial_images: 1 });
    for await (const event of stream) context.errors.push(`an event of type ${event.type} after a bad size`);
  } catch (error) {
    if (!(error instanceof OpenAI.BadRequestError)) {
      context.errors.push(`expected BadRequestError, got ${error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error)}`);
      return;
    }
    expect(context, error.param === 'size', `error.param is ${JSON.stringify(error.param)}, expected "size"`);
    context.details.status = error.status;
    context.details.param = error.param;
    return;
  }
  context.errors.push('the call succeeded; expected BadRequestError');
}

/**
 * OpenAI fails after its first partial: the stream (200, begun) yields that partial, then its async iterator throws
 * the SDK's APIError carrying the error event's error (no status: the status line said 200).
 * @param {Context} context
 */
async function errorMidStream(context) {
  const { data: stream, response } = await client.images
    .generate({ model: OPENAI_MODEL, prompt: 'fail:mid-stream', size: '1024x1024', stream: true, partial_images: 2 })
    .withResponse();
  context.details.status = response.status;
  context.details.request_id = response.headers.get('x-amzn-requestid');
  /** @type {EventOut[]} */
  const events = [];
  context.details.events = events;
  try {
    for await (const event of stream) {
      const out = checked(context, event);
      if (out !== undefined) events.push(out);
    }
  } catch (error) {
    // APIConnectionError (the connection cut) is an APIError too: only the error event's own error will do.
    if (!(error instanceof OpenAI.APIError) || error instanceof OpenAI.APIConnectionError) {
      context.errors.push(`expected APIError, got ${error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error)}`);
      return;
    }
    const { message, status, type, code, param } = error;
    context.details.error = { name: error.constructor.name, message, status: status ?? null, type, code, param };
    const seen = JSON.stringify(events.map((event) => event.type));
    expect(context, seen === JSON.stringify(['image_generation.partial_image']), `event types ${seen} before the error`);
    return;
  }
  context.errors.push('the stream ended without an error; expected APIError');
}

/** @type {[string, (context: Context) => Promise<void>][]} */
const CHECKS = [
  ['generate_stream', generateStream],
  ['edit_stream', editStream],
  ['error_stream_bad_size', errorStreamBadSize],
  ['error_mid_stream', errorMidStream],
];

const checks = [];
for (const [name, run] of CHECKS) {
  /** @type {Context} */
  const context = { errors: [], extras: [], details: {} };
  try {
    await run(context);
  } catch (error) {
    context.errors.push(`threw ${error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error)}`);
  }
  checks.push({ name, errors: context.errors, extras: context.extras, ...context.details });
}

process.stdout.write(`${JSON.stringify({ sdk: VERSION, node: process.version, typecheck: types.diagnostics, checks })}\n`);
process.exitCode = types.diagnostics.length > 0 || checks.some((check) => check.errors.length > 0) ? 1 : 0;
