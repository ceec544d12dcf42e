// @ts-check
/**
 * The official openai npm package as a client of the Usage API, against IMAGEGEN_BASE_URL (".../v1") with
 * IMAGEGEN_API_KEY as its key and its admin key (the usage call sends adminAPIKey): one generation, then the usage
 * since IMAGEGEN_START_TIME through client.admin.organization.usage.images, grouped by model and source in minute
 * buckets. Prints one JSON report on stdout: { sdk, generated, buckets, results: [{ ...result, cost }] }.
 * tests/e2e/test_usage_e2e.py runs it and checks the report. Exits 2 when it could not run.
 */
import OpenAI from 'openai';
import { VERSION } from 'openai/version';

const baseURL = process.env.IMAGEGEN_BASE_URL;
const apiKey = process.env.IMAGEGEN_API_KEY;
const startTime = Number(process.env.IMAGEGEN_START_TIME);
if (!baseURL || !apiKey || !Number.isInteger(startTime)) {
  process.stderr.write('IMAGEGEN_BASE_URL, IMAGEGEN_API_KEY and IMAGEGEN_START_TIME are required\n');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, adminAPIKey: apiKey, maxRetries: 0, timeout: 60_000 });

const generated = await client.images.generate({ model: 'local', prompt: 'a fox from node', size: '256x256', n: 2 });
const page = await client.admin.organization.usage.images({
  start_time: startTime,
  bucket_width: '1m',
  group_by: ['model', 'source'],
});
const results = page.data.flatMap((bucket) => bucket.results);
process.stdout.write(
  JSON.stringify({ sdk: VERSION, generated: generated.data?.length ?? 0, buckets: page.data.length, results }) + '\n',
);
