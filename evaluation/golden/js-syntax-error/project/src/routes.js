export const routes = [
  { path: "/", view: "home" },
  { path: "/orders", view: "orders" }
  { path: "/orders/:id", view: "order" },
];
