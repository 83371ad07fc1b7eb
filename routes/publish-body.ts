import { TypeCompiler } from '@sinclair/typebox/compiler'
import { ValueErrorType } from '@sinclair/typebox/errors'
import type { TSchema } from '@sinclair/typebox'
import { InvalidPublishError } from '../plugin/errors.js'

/**
 * The publish body's validator: the same schema as the route documents, with errors that name the
 * field, the rule and, in a batch, the message's index (a union schema's own error would only
 * say that the body matched neither a message nor a batch).
 */
export function publishBodyValidator (message: TSchema, maxBatchSize: number): (body: unknown) => { value: unknown } | { error: Error } {
  const check = TypeCompiler.Compile(message)
  const problemOf = (value: unknown): string | undefined => {
    if (check.Check(value)) return undefined
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return `a message is a JSON object with "data" (got ${kindOf(value)})`
    const error = check.Errors(value).First()
    /* c8 ignore next -- a value Check refuses always has a first error */
    if (error === undefined) return 'the message is invalid'
    const field = error.path.slice(1).replaceAll('/', '.')
    if (error.type === ValueErrorType.ObjectRequiredProperty) return `"${field}" is required`
    const rule = typeof error.schema.description === 'string' ? error.schema.description : error.message
    return `"${field}" is invalid: ${rule} (got ${preview(error.value)})`
  }
  return (body) => {
    let problem: string | undefined
    if (!Array.isArray(body)) {
      problem = problemOf(body)
    } else if (body.length === 0 || body.length > maxBatchSize) {
      problem = `a batch holds 1 to ${maxBatchSize} messages (maxBatchSize), got ${body.length}`
    } else {
      for (let index = 0; index < body.length && problem === undefined; index++) {
        const found = problemOf(body[index])
        if (found !== undefined) problem = `message ${index}: ${found}`
      }
    }
    return problem === undefined ? { value: body } : { error: new InvalidPublishError(problem) }
  }
}

function kindOf (value: unknown): string {
  if (value === null) return 'null'
  return Array.isArray(value) ? 'an array' : typeof value
}

function preview (value: unknown): string {
  const text = String(JSON.stringify(value))
  return text.length > 80 ? `${text.slice(0, 77)}...` : text
}
