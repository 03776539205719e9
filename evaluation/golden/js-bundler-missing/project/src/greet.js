export const greet = (who) => `Welcome, ${who}!`;
