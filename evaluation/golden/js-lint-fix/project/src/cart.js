export function total(items) {
  var sum = 0;
  for (const item of items) {
    if (item.qty == 0) continue;
    sum += item.qty * item.price;
  }
  return sum;
}
