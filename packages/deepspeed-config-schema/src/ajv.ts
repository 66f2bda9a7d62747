/**
 * The one place ajv is imported. ajv ships CommonJS whose module.exports is the class itself,
 * so under Node's ESM loader the default import is the constructor; bundlers that wrap CommonJS
 * differently hand back the namespace with the class on `.default`. Taking whichever is a
 * function keeps both working.
 */
import Ajv2020Module from "ajv/dist/2020.js";

export type { ErrorObject, ValidateFunction } from "ajv";

type Ajv2020Class = typeof Ajv2020Module;

export const Ajv2020: Ajv2020Class =
  typeof Ajv2020Module === "function" ? Ajv2020Module : (Ajv2020Module as unknown as { default: Ajv2020Class }).default;
