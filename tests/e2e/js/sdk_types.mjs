// @ts-check
/**
 * Runtime validation of JSON values against the openai npm package's own TypeScript declarations.
 *
 * The package ships types only (no runtime schema), so this module compiles this folder's project
 * (tsconfig.json: the client script, checked with checkJs against the package's .d.mts) with the pinned
 * `typescript` compiler API and then walks the declared types with the compiler's checker: a field the SDK
 * declares as `number` must be a number, a required field must be present, a literal union must hold one of
 * its literals, and so on down nested interfaces and arrays. Nothing about the response shapes is restated
 * here, so the checks follow the SDK when the lock moves it. The same compilation gives `tsc --noEmit`'s
 * diagnostics for the script, so one node process type-checks the script and then runs it.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import ts from 'typescript';

const HERE = path.dirname(fileURLToPath(import.meta.url));

/** @typedef {{ errors: string[], extras: string[] }} Verdict */

/** @param {readonly ts.Diagnostic[]} diagnostics */
function formatDiagnostics(diagnostics) {
  return diagnostics.map((diagnostic) => {
    const message = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n');
    if (diagnostic.file === undefined || diagnostic.start === undefined) return message;
    const { line, character } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start);
    return `${path.relative(HERE, diagnostic.file.fileName)}:${line + 1}:${character + 1}: ${message}`;
  });
}

export class SdkTypes {
  /** @param {string} [configPath] tsconfig.json of this folder */
  constructor(configPath = path.join(HERE, 'tsconfig.json')) {
    const config = ts.readConfigFile(configPath, ts.sys.readFile);
    if (config.error !== undefined) throw new Error(formatDiagnostics([config.error]).join('\n'));
    const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, path.dirname(configPath));
    if (parsed.errors.length > 0) throw new Error(formatDiagnostics(parsed.errors).join('\n'));
    this.program = ts.createProgram({ rootNames: parsed.fileNames, options: parsed.options });
    this.checker = this.program.getTypeChecker();
    /** `tsc -p tests/e2e/js` (noEmit) would print exactly these. */
    this.diagnostics = formatDiagnostics(ts.getPreEmitDiagnostics(this.program));
    this.sdk = this.#moduleSymbol('openai');
  }

  /**
   * The symbol of a module as the project's sources import it (the same resolution as the script's imports).
   * @param {string} specifier
   */
  #moduleSymbol(specifier) {
    for (const file of this.program.getRootFileNames()) {
      const source = this.program.getSourceFile(file);
      for (const statement of source?.statements ?? []) {
        if (ts.isImportDeclaration(statement) && ts.isStringLiteral(statement.moduleSpecifier) && statement.moduleSpecifier.text === specifier) {
          const symbol = this.checker.getSymbolAtLocation(statement.moduleSpecifier);
          if (symbol !== undefined) return symbol;
        }
      }
    }
    throw new Error(`no source of ${HERE} imports '${specifier}'`);
  }

  /** @param {ts.Symbol} symbol */
  #resolved(symbol) {
    return symbol.flags & ts.SymbolFlags.Alias ? this.checker.getAliasedSymbol(symbol) : symbol;
  }

  /**
   * The type an SDK user writes as `OpenAI.ImagesResponse` or `OpenAI.Models.Model`: a dotted path from the
   * package's exports.
   * @param {string} dotted
   */
  type(dotted) {
    let symbol = this.sdk;
    for (const name of dotted.split('.')) {
      const member = this.checker.getExportsOfModule(this.#resolved(symbol)).find((candidate) => candidate.name === name);
      if (member === undefined) throw new Error(`the openai package exports no type ${dotted} (no ${name})`);
      symbol = member;
    }
    return this.checker.getDeclaredTypeOfSymbol(this.#resolved(symbol));
  }

  /**
   * Check a JSON value against an SDK type. `extra: 'forbid'` makes a property the SDK does not declare an error
   * (the Images API answers exactly OpenAI's shape); `'allow'` only lists it (documented extensions, e.g. a model's
   * capabilities).
   * @param {unknown} value
   * @param {string} dotted e.g. 'OpenAI.ImagesResponse'
   * @param {{ extra?: 'forbid' | 'allow' }} [options]
   * @returns {Verdict}
   */
  validate(value, dotted, { extra = 'forbid' } = {}) {
    /** @type {Verdict} */
    const verdict = { errors: [], extras: [] };
    this.#check(value, this.type(dotted), dotted, extra, verdict);
    return verdict;
  }

  /**
   * @param {unknown} value
   * @param {ts.Type} type
   * @param {string} where
   * @param {'forbid' | 'allow'} extra
   * @param {Verdict} verdict
   */
  #check(value, type, where, extra, verdict) {
    const expected = () => `${where}: ${JSON.stringify(value)} is not ${this.checker.typeToString(type)}`;
    const flags = type.flags;
    if (flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
    if (type.isUnion()) {
      /** @type {Verdict[]} */
      const substantive = [];
      for (const member of type.types) {
        /** @type {Verdict} */
        const trial = { errors: [], extras: [] };
        this.#check(value, member, where, extra, trial);
        if (trial.errors.length === 0) {
          verdict.extras.push(...trial.extras);
          return;
        }
        if (!(member.flags & (ts.TypeFlags.Undefined | ts.TypeFlags.Null))) substantive.push(trial);
      }
      // `T | null | undefined`: say what is wrong inside T rather than only that the whole value is not T
      if (substantive.length === 1 && substantive[0] !== undefined) verdict.errors.push(...substantive[0].errors);
      else verdict.errors.push(expected());
      return;
    }
    if (type.isIntersection()) {
      for (const member of type.types) this.#check(value, member, where, extra, verdict);
      return;
    }
    if (type.isStringLiteral() || type.isNumberLiteral()) {
      if (value !== type.value) verdict.errors.push(expected());
      return;
    }
    if (flags & ts.TypeFlags.BooleanLiteral) {
      if (value !== (this.checker.typeToString(type) === 'true')) verdict.errors.push(expected());
      return;
    }
    /** @type {[number, (v: unknown) => boolean][]} */
    const primitives = [
      [ts.TypeFlags.String, (v) => typeof v === 'string'],
      [ts.TypeFlags.Number, (v) => typeof v === 'number' && Number.isFinite(v)],
      [ts.TypeFlags.Boolean, (v) => typeof v === 'boolean'],
      [ts.TypeFlags.Null, (v) => v === null],
      [ts.TypeFlags.Undefined, (v) => v === undefined],
    ];
    for (const [flag, accepts] of primitives) {
      if (flags & flag) {
        if (!accepts(value)) verdict.errors.push(expected());
        return;
      }
    }
    if (!(flags & ts.TypeFlags.Object)) {
      verdict.errors.push(`${where}: the validator does not handle ${this.checker.typeToString(type)}`);
      return;
    }
    if (this.checker.isArrayType(type)) {
      if (!Array.isArray(value)) {
        verdict.errors.push(expected());
        return;
      }
      const [element] = this.checker.getTypeArguments(/** @type {ts.TypeReference} */ (type));
      if (element === undefined) throw new Error(`${where}: an array type without an element type`);
      value.forEach((item, index) => this.#check(item, element, `${where}[${index}]`, extra, verdict));
      return;
    }
    const properties = this.checker.getPropertiesOfType(type);
    const indexInfos = this.checker.getIndexInfosOfType(type);
    if (properties.length === 0 && indexInfos.length === 0) {
      // `{}` (as in `(string & {})`): any value but null and undefined
      if (value === null || value === undefined) verdict.errors.push(expected());
      return;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      verdict.errors.push(expected());
      return;
    }
    const record = /** @type {Record<string, unknown>} */ (value);
    const declared = new Set();
    for (const property of properties) {
      declared.add(property.name);
      const optional = (property.flags & ts.SymbolFlags.Optional) !== 0;
      if (!(property.name in record)) {
        if (!optional) verdict.errors.push(`${where}.${property.name}: missing (the SDK declares it required)`);
        continue;
      }
      // JSON has no undefined: an optional property's `| undefined` member never matches a present value
      this.#check(record[property.name], this.checker.getTypeOfSymbol(property), `${where}.${property.name}`, extra, verdict);
    }
    for (const key of Object.keys(record)) {
      if (declared.has(key)) continue;
      const info = indexInfos.find((candidate) => candidate.keyType.flags & ts.TypeFlags.String);
      if (info !== undefined) this.#check(record[key], info.type, `${where}.${key}`, extra, verdict);
      else if (extra === 'forbid') verdict.errors.push(`${where}.${key}: not a field of the SDK's ${this.checker.typeToString(type)}`);
      else verdict.extras.push(`${where}.${key}`);
    }
  }
}
