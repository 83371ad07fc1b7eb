/** The credential of an `Authorization: Bearer <credential>` header, or undefined for any other value. */
export function bearerCredential (header: string | undefined): string | undefined {
  if (header === undefined) return undefined
  return /^Bearer +(\S+)\s*$/i.exec(header)?.[1]
}
