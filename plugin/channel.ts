import { Type } from '@sinclair/typebox'

export const CHANNEL_MAX_LENGTH = 128

export const ChannelName = Type.String({
  pattern: `^[A-Za-z0-9_.:-]{1,${CHANNEL_MAX_LENGTH}}$`,
  description: 'A channel name: 1-128 characters of A-Z a-z 0-9 _ - . :'
})

const channelRegex = new RegExp(ChannelName.pattern as string)

export function isValidChannel (value: unknown): value is string {
  return typeof value === 'string' && channelRegex.test(value)
}
